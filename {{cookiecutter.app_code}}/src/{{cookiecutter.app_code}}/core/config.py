"""Typed settings read from the environment and `.env`.

The environment wins over `.env`, so compose (which sets DB_HOST=<app>-postgres and so on)
and the native stack share one file. A missing required value fails at start with the
variable's name, never later with a connection error.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[3]
ENV_FILE = PROJECT_ROOT / ".env"
APP_CODE = "{{ cookiecutter.app_code }}"
SECRET_WORDS = ("PWD", "PASSWORD", "TOKEN", "SECRET")
NOT_GIVEN = SecretStr("")
# Which secrets each process holds, and nothing else: the native stack and compose hand each
# process only these (tests check /proc/<pid>/environ and compose.yml against this table).
PROCESS_SECRETS: dict[str, tuple[str, ...]] = {
    "api": ("DB_APP_PWD", "REDIS_PASSWORD", "API_TOKEN", "API_READ_TOKEN", "SESSION_SECRET"),
    "worker": ("DB_DATA_PWD", "REDIS_PASSWORD"),
    "migrate": ("DB_ADMIN_PWD",),
    "bootstrap": ("DB_BOOTSTRAP_PWD", "DB_ADMIN_PWD", "DB_DATA_PWD", "DB_APP_PWD"),
}
# Every secret of the service: a variable whose name holds one of SECRET_WORDS.
ALL_SECRETS = tuple(sorted({name for names in PROCESS_SECRETS.values() for name in names}))
# Set to another path, or to nothing (read the environment alone, as the native stack's
# processes do), instead of the project's `.env`.
ENV_FILE_VARIABLE = "SETTINGS_ENV_FILE"
# libpq's sslmode values (https://www.postgresql.org/docs/current/libpq-ssl.html).
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    app_code: str = APP_CODE
    env: Literal["dev", "test", "staging", "prod"] = "dev"
    log_level: str = "INFO"

    # API
    api_host: str = "127.0.0.1"
    api_port: int = Field({{ cookiecutter.api_host_port }}, validation_alias=AliasChoices("API_PORT", "API_HOST_PORT"))
    # Secrets default to empty: a process holds only its own (PROCESS_SECRETS) and checks at
    # start that it has them (Settings.require).
    api_token: SecretStr = NOT_GIVEN
    # Reads only: GET /api/v1/jobs..., /api/v1/info, /api/v1/ready's details, and a
    # read-only status page session. API_TOKEN reads too. The two must differ.
    api_read_token: SecretStr = NOT_GIVEN
    # Signs the status page's session cookie (api/session.py); a new value ends every
    # session. At least 32 characters.
    session_secret: SecretStr = NOT_GIVEN
    # How long a status page login lasts, from the login: 8 h.
    session_max_age_seconds: int = Field(8 * 3600, ge=60, le=30 * 86400)
    # Larger bodies get a 413 before they are read. Twice the 64 KiB params limit
    # (api/schemas.py), so pretty-printed JSON within that limit still gets through.
    api_max_body_bytes: int = Field(128 * 1024, ge=1024)
    # POST /api/v1/batches: up to 1,000 jobs in one body.
    api_max_batch_bytes: int = Field(1024 * 1024, ge=1024)
    # uvicorn's access log, one line a request: off by default, as it cost ~9% of the API's CPU
    # per submission (py-spy under `make bench`); the request metrics and traces still see
    # every request.
    api_access_log: bool = False

    # PostgreSQL: DB_PORT (set by compose) wins over the published DB_HOST_PORT.
    db_host: str = "127.0.0.1"
    db_port: int = Field({{ cookiecutter.db_host_port }}, validation_alias=AliasChoices("DB_PORT", "DB_HOST_PORT"))
    db_name: str = f"db_{APP_CODE}"
    db_schema: str = APP_CODE
    db_admin_user: str = f"{APP_CODE}_admin"
    db_data_user: str = f"{APP_CODE}_data"
    db_app_user: str = f"{APP_CODE}_app"
    db_admin_pwd: SecretStr = NOT_GIVEN
    db_data_pwd: SecretStr = NOT_GIVEN
    db_app_pwd: SecretStr = NOT_GIVEN
    # The cluster's superuser, for the bootstrap step alone (database, roles, grants): the
    # admin role owns the objects but is no superuser.
    db_bootstrap_user: str = "postgres"
    db_bootstrap_pwd: SecretStr = NOT_GIVEN
    db_pool_min_size: int = Field(1, ge=0)
    # 10, though a worker runs 20 jobs: its ledger writer needs one connection and the jobs
    # share the rest (a query holds one for milliseconds). Measured: at 20, an API whose pool
    # had grown under load (`make bench`) answered 503 for over 5 s after a PostgreSQL restart
    # (tests/reliability/test_outages.py); at 10 it recovered in time, and no slower.
    db_pool_max_size: int = Field(10, ge=1)
    # Connecting, and waiting for a pooled connection: with PostgreSQL down a request answers
    # 503 after this long.
    db_connect_timeout: float = Field(2.0, gt=0)
    # TLS to PostgreSQL. `prefer` is libpq's own default: TLS when the server offers it, plain
    # otherwise, so the local stack (no TLS) and a managed server (TLS) both work unchanged.
    # It checks no certificate: in production set `verify-full` and DB_SSLROOTCERT.
    db_sslmode: SslMode = "prefer"
    # CA certificate file that signed the server's certificate, or `system` (the system's
    # trusted roots). Needed by verify-ca and verify-full.
    db_sslrootcert: str | None = None

    # Redis: REDIS_PORT (set by compose) wins over the published REDIS_HOST_PORT.
    redis_host: str = "127.0.0.1"
    redis_port: int = Field({{ cookiecutter.redis_host_port }}, validation_alias=AliasChoices("REDIS_PORT", "REDIS_HOST_PORT"))
    redis_password: SecretStr = NOT_GIVEN
    redis_db: int = 0
    # The API's connect and command timeout: with Redis down or hung a submission answers 503
    # within this long.
    redis_timeout: float = Field(1.0, gt=0)
    # TLS to Redis (`rediss://`): the server's certificate is checked against
    # REDIS_SSL_CA_CERTS, or the system's trusted roots when that is not set.
    redis_ssl: bool = False
    redis_ssl_ca_certs: str | None = None
    # Redis Sentinel: `host:port,host:port`, and the name of the monitored master. When set,
    # the API and the worker ask the sentinels where the master is, and REDIS_HOST and
    # REDIS_HOST_PORT are not used. REDIS_PASSWORD is the master's password.
    redis_sentinels: str | None = None
    redis_sentinel_master: str | None = None

    # Worker and jobs
    key_ttl_seconds: int = Field({{ cookiecutter.key_ttl_hours|int * 3600 }}, ge=60)
    hello_cron: str = "{{ cookiecutter.hello_cron }}"
    cleanup_cron: str = "{{ cookiecutter.cleanup_cron }}"
    # Seconds between polls of the queue. Measured with `make bench` on 2 cores: 0.01 keeps
    # enqueue-to-start p50 near 7 ms (0.05: 30-40 ms; arq's 0.5 also caps a worker near 200
    # jobs/s), for 4-7% of a core per idle worker (0.05: 1.3%, 0.005: 8-10%).
    worker_poll_delay: float = Field(0.01, gt=0)
    # Jobs one worker runs at once. 20, not arq's 10: a worker of short jobs is full less often,
    # and claims (and records in the ledger) more jobs per round trip.
    worker_max_jobs: int = Field(20, ge=1)
    worker_job_timeout: int = Field(300, ge=1)
    worker_max_tries: int = Field(5, ge=1)
    worker_health_check_interval: int = Field(5, ge=1)
    # arq's two INFO lines per job (started, succeeded). Off: the ledger records every job
    # (the status page shows them), and at 2,000 jobs/s the lines cost a worker 5-8% of its
    # CPU (make bench). Retries, cancellations, failures and expiries are logged either way.
    worker_log_jobs: bool = False
    # The `noop` job `make bench` submits (jobs/noop.py): the API accepts it and the worker
    # registers it only when on. Unset: on with ENV=dev, off in every other environment.
    bench_job: bool | None = None
    # The worker's Prometheus metrics (worker/metrics.py): http://<host>:<port>/metrics; port 0
    # serves none. Compose binds 0.0.0.0 in the container, the native stack 127.0.0.1.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field({{ cookiecutter.api_host_port|int + 3 }}, ge=0, le=65535)

    @field_validator(
        "db_sslrootcert",
        "redis_ssl_ca_certs",
        "redis_sentinels",
        "redis_sentinel_master",
        "bench_job",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """`DB_SSLROOTCERT=` (as in .env.example) means not set."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("db_sslrootcert", "redis_ssl_ca_certs")
    @classmethod
    def _readable_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        postgres = info.field_name == "db_sslrootcert"
        if value is None or (postgres and value == "system"):
            return value
        if not Path(value).is_file():
            raise ValueError(
                "no such file: give the path of the CA certificate (PEM) that signed the "
                "server's certificate"
                + (", or `system` for the system's trusted roots" if postgres else "")
            )
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_list(cls, value: str | None) -> str | None:
        if value is not None:
            parse_hosts(value)
        return value

    @model_validator(mode="after")
    def _tls_and_sentinel_agree(self) -> Settings:
        problems = []
        if self.db_sslmode in ("verify-ca", "verify-full") and self.db_sslrootcert is None:
            problems.append(
                f"DB_SSLMODE={self.db_sslmode} checks the server's certificate, but "
                "DB_SSLROOTCERT is not set: set it to the CA file of your PostgreSQL provider, "
                "or to `system` for the system's trusted roots"
            )
        if self.db_sslrootcert is not None and self.db_sslmode not in (
            "require",
            "verify-ca",
            "verify-full",
        ):
            problems.append(
                f"DB_SSLROOTCERT is set but DB_SSLMODE={self.db_sslmode} checks no certificate: "
                "set DB_SSLMODE=verify-full (or verify-ca), or remove DB_SSLROOTCERT"
            )
        if self.redis_ssl_ca_certs is not None and not self.redis_ssl:
            problems.append(
                "REDIS_SSL_CA_CERTS is set but REDIS_SSL is false: set REDIS_SSL=true to use "
                "TLS, or remove REDIS_SSL_CA_CERTS"
            )
        if (self.redis_sentinels is None) != (self.redis_sentinel_master is None):
            given, missing = (
                ("REDIS_SENTINELS", "REDIS_SENTINEL_MASTER")
                if self.redis_sentinel_master is None
                else ("REDIS_SENTINEL_MASTER", "REDIS_SENTINELS")
            )
            problems.append(
                f"{given} is set but {missing} is not: Sentinel needs both (the sentinels as "
                "host:port,host:port and the master's name), or neither"
            )
        if self.redis_sentinels is not None and self.redis_ssl_ca_certs is not None:
            problems.append(
                "REDIS_SSL_CA_CERTS cannot be used with REDIS_SENTINELS: arq builds the "
                "worker's Sentinel connections without a CA file; install the CA in the "
                "system's trust store (or point SSL_CERT_FILE at it) and remove "
                "REDIS_SSL_CA_CERTS"
            )
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    @model_validator(mode="after")
    def _tokens_apart(self) -> Settings:
        problems = []
        read, write = self.api_read_token.get_secret_value(), self.api_token.get_secret_value()
        if read and read == write:
            problems.append(
                "API_READ_TOKEN equals API_TOKEN, so the read token could write: give it a "
                'value of its own (python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        session_secret = self.session_secret.get_secret_value()
        if session_secret and len(session_secret) < 32:
            problems.append(
                f"SESSION_SECRET is {len(session_secret)} characters; it needs at least 32 "
                '(python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    @property
    def redis_sentinel_hosts(self) -> list[tuple[str, int]]:
        """REDIS_SENTINELS as (host, port) pairs; empty without Sentinel."""
        return [] if self.redis_sentinels is None else parse_hosts(self.redis_sentinels)

    @property
    def bench_job_enabled(self) -> bool:
        """BENCH_JOB, or when it is not set, whether this is a development stack."""
        return self.env == "dev" if self.bench_job is None else self.bench_job

    @property
    def queue_name(self) -> str:
        return f"{self.app_code}:queue"

    def db_password(self, user: str) -> SecretStr:
        """The password of one of the three roles, by role name."""
        by_user = {
            self.db_admin_user: self.db_admin_pwd,
            self.db_data_user: self.db_data_pwd,
            self.db_app_user: self.db_app_pwd,
        }
        try:
            secret = by_user[user]
        except KeyError:
            raise ValueError(f"unknown role {user!r}; known: {', '.join(by_user)}") from None
        if not secret.get_secret_value():
            name = {
                self.db_admin_user: "DB_ADMIN_PWD",
                self.db_data_user: "DB_DATA_PWD",
                self.db_app_user: "DB_APP_PWD",
            }[user]
            raise SettingsError(
                f"{name} is not set: this process does not hold the {user} role's password "
                "(each process gets only its own; see PROCESS_SECRETS in core/config.py)"
            )
        return secret

    def require(self, process: str) -> Settings:
        """Check that the secrets `process` needs are here; raise SettingsError naming each
        missing one. Returns self, to chain after load_settings()."""
        missing = [
            name
            for name in PROCESS_SECRETS[process]
            if not getattr(self, name.lower()).get_secret_value()
        ]
        if missing:
            raise SettingsError(
                f"configuration error: the {process} needs "
                + ", ".join(missing)
                + f": add {'them' if len(missing) > 1 else 'it'} to {ENV_FILE} or the environment"
            )
        return self


def parse_hosts(text: str) -> list[tuple[str, int]]:
    """`host:port,host:port` (IPv6 as `[::1]:26379`) as (host, port) pairs."""
    hosts = []
    for item in (part.strip() for part in text.split(",")):
        host, sep, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(
                f"{item!r} is not host:port: list the sentinels as host:port,host:port "
                "(for example sentinel-1:26379,sentinel-2:26379)"
            )
        hosts.append((host, int(port)))
    return hosts


class SettingsError(RuntimeError):
    """Raised with a message a person can act on."""


def env_file() -> Path | None:
    """`.env`, unless SETTINGS_ENV_FILE names another file, or nothing."""
    chosen = os.environ.get(ENV_FILE_VARIABLE)
    if chosen is None:
        return ENV_FILE
    return Path(chosen) if chosen.strip() else None


def load_settings() -> Settings:
    """Read settings, turning pydantic's report into one line per bad or missing variable."""
    try:
        return Settings(_env_file=env_file())
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = str(err["loc"][0]).upper() if err["loc"] else "?"
            if not err["loc"]:  # a check across variables: its message names them
                lines.append(str(err["msg"]).removeprefix("Value error, "))
            elif err["type"] == "missing":
                lines.append(f"{name} is not set: add it to {ENV_FILE} or the environment")
            elif any(word in name for word in SECRET_WORDS):
                lines.append(f"{name} is invalid: {err['msg']}")
            else:
                lines.append(f"{name}={err.get('input')!r} is invalid: {err['msg']}")
        raise SettingsError("configuration error:\n  " + "\n  ".join(lines)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
