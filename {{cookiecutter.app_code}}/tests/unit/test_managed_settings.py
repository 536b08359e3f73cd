"""TLS and Sentinel settings: what reaches libpq, arq and redis-py, and what is refused.

The same settings against real servers (PostgreSQL with TLS, Redis with TLS, a real Sentinel)
are tested by the template's tests/test_managed_services.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.sentinel import SentinelConnectionPool, SentinelManagedSSLConnection

from {{ cookiecutter.app_code }}.core.config import Settings, SettingsError, load_settings
from {{ cookiecutter.app_code }}.db.pool import Role, conninfo
from {{ cookiecutter.app_code }}.queue import client, deserialize, redis_settings, serialize

MANAGED = (
    "DB_SSLMODE",
    "DB_SSLROOTCERT",
    "REDIS_SSL",
    "REDIS_SSL_CA_CERTS",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
)
SECRETS = {
    "API_TOKEN": "t" * 20,
    "DB_ADMIN_PWD": "a" * 20,
    "DB_DATA_PWD": "d" * 20,
    "DB_APP_PWD": "p" * 20,
    "REDIS_PASSWORD": "r" * 20,
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets: the managed settings start unset whatever the shell has."""
    for name in MANAGED:
        monkeypatch.delenv(name, raising=False)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def ca_file(tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(path)


def settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_defaults_keep_plain_connections() -> None:
    s = settings(db_sslrootcert="", redis_ssl_ca_certs="", redis_sentinels="")  # as .env has them
    params = conninfo_to_dict(conninfo(s, Role.APP))
    assert params["sslmode"] == "prefer" and "sslrootcert" not in params
    # A server that stops answering (its host cut off) breaks the connection within 2 x
    # DB_CONNECT_TIMEOUT instead of TCP's 15 minutes of retransmissions.
    assert params["tcp_user_timeout"] == str(round(2 * s.db_connect_timeout * 1000))
    # Idle connections too, on both sides (a dead client's session and its locks end).
    assert (params["keepalives"], params["keepalives_count"]) == ("1", "2")
    assert "-c tcp_keepalives_idle=" in params["options"]
    rs = redis_settings(s)
    assert (rs.host, rs.port, rs.ssl, rs.sentinel) == (s.redis_host, s.redis_port, False, False)
    pool = client(s).connection_pool
    assert pool.connection_class is Connection
    assert pool.connection_kwargs["host"] == s.redis_host


def test_postgres_tls_reaches_libpq(ca_file: str) -> None:
    s = settings(db_sslmode="verify-full", db_sslrootcert=ca_file)
    for role in Role:
        params = conninfo_to_dict(conninfo(s, role))
        assert (params["sslmode"], params["sslrootcert"]) == ("verify-full", ca_file)
    system = conninfo_to_dict(
        conninfo(settings(db_sslmode="verify-ca", db_sslrootcert="system"), Role.DATA)
    )
    assert system["sslrootcert"] == "system"


def test_redis_tls_reaches_arq_and_the_api_client(ca_file: str) -> None:
    s = settings(redis_ssl="true", redis_ssl_ca_certs=ca_file)
    rs = redis_settings(s)
    assert (rs.ssl, rs.ssl_ca_certs, rs.ssl_check_hostname) == (True, ca_file, True)
    pool = client(s).connection_pool
    assert issubclass(pool.connection_class, SSLConnection)
    assert pool.connection_kwargs["ssl_ca_certs"] == ca_file
    assert pool.connection_kwargs["ssl_check_hostname"] is True


def test_sentinel_reaches_arq_and_the_api_client() -> None:
    s = settings(redis_sentinels="s1.example:26379, [::1]:26380", redis_sentinel_master="main")
    rs = redis_settings(s)
    assert rs.sentinel is True and rs.sentinel_master == "main"
    assert rs.host == [("s1.example", 26379), ("::1", 26380)]
    arq = client(s)
    pool = arq.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "main"
    assert [
        c.connection_pool.connection_kwargs["port"] for c in pool.sentinel_manager.sentinels
    ] == [
        26379,
        26380,
    ]
    assert pool.connection_kwargs["password"] == SECRETS["REDIS_PASSWORD"]
    assert (arq.job_serializer, arq.job_deserializer) == (serialize, deserialize)
    assert arq.default_queue_name == s.queue_name
    tls = client(settings(redis_sentinels="s1:26379", redis_sentinel_master="m", redis_ssl=True))
    assert tls.connection_pool.connection_class is SentinelManagedSSLConnection


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DB_SSLMODE": "on"}, "DB_SSLMODE='on' is invalid: Input should be 'disable'"),
        (
            {"DB_SSLMODE": "verify-full", "DB_SSLROOTCERT": "/no/such/ca.pem"},
            "DB_SSLROOTCERT='/no/such/ca.pem' is invalid: Value error, no such file: give the "
            "path of the CA certificate (PEM) that signed the server's certificate, or `system`",
        ),
        (
            {"DB_SSLMODE": "verify-full"},
            "DB_SSLMODE=verify-full checks the server's certificate, but DB_SSLROOTCERT is not "
            "set: set it to the CA file",
        ),
        (
            {"DB_SSLROOTCERT": "{ca}"},
            "DB_SSLROOTCERT is set but DB_SSLMODE=prefer checks no certificate: set "
            "DB_SSLMODE=verify-full",
        ),
        ({"REDIS_SSL": "maybe"}, "REDIS_SSL='maybe' is invalid: Input should be a valid boolean"),
        (
            {"REDIS_SSL": "true", "REDIS_SSL_CA_CERTS": "/no/such/ca.pem"},
            "REDIS_SSL_CA_CERTS='/no/such/ca.pem' is invalid: Value error, no such file",
        ),
        (
            {"REDIS_SSL_CA_CERTS": "{ca}"},
            "REDIS_SSL_CA_CERTS is set but REDIS_SSL is false: set REDIS_SSL=true",
        ),
        (
            {"REDIS_SENTINELS": "s1:26379,s2", "REDIS_SENTINEL_MASTER": "m"},
            "'s2' is not host:port: list the sentinels as host:port,host:port",
        ),
        (
            {"REDIS_SENTINELS": "s1:99999", "REDIS_SENTINEL_MASTER": "m"},
            "'s1:99999' is not host:port",
        ),
        (
            {"REDIS_SENTINELS": "s1:26379"},
            "REDIS_SENTINELS is set but REDIS_SENTINEL_MASTER is not: Sentinel needs both",
        ),
        (
            {"REDIS_SENTINEL_MASTER": "m"},
            "REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not",
        ),
        (
            {
                "REDIS_SENTINELS": "s1:26379",
                "REDIS_SENTINEL_MASTER": "m",
                "REDIS_SSL": "true",
                "REDIS_SSL_CA_CERTS": "{ca}",
            },
            "REDIS_SSL_CA_CERTS cannot be used with REDIS_SENTINELS",
        ),
    ],
)
def test_bad_values_stop_the_start_with_what_to_do(
    monkeypatch: pytest.MonkeyPatch, ca_file: str, env: dict[str, str], expected: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(ca=ca_file))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert expected in str(caught.value)
