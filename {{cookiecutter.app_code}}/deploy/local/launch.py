#!/usr/bin/env python3
"""Start one process of the native stack with its own secrets and no others.

supervisord runs `launch.py api -- uvicorn ...` and `launch.py worker -- arq ...`; supervisord
itself holds no secret. This reads `.env` (the settings) and the process's own secrets file,
which `make up` writes (`.local/run/<process>.secrets.json`, 0600: the secrets from the
environment `make up` ran in, or from `.env`); keeps every setting that is not a secret, adds
the secrets PROCESS_SECRETS gives the process, tells it not to read `.env` itself
(SETTINGS_ENV_FILE=), and execs the command: the process's /proc/<pid>/environ holds its own
secrets only.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # stack_processes beside this one

from dotenv import dotenv_values  # noqa: E402
from stack_processes import write_private  # noqa: E402

from {{ cookiecutter.app_code }}.core.config import (  # noqa: E402
    ENV_FILE_VARIABLE,
    PROCESS_SECRETS,
    SECRET_WORDS,
    Settings,
)
from {{ cookiecutter.app_code }}.core.metrics import MULTIPROC_VARIABLE  # noqa: E402


def is_secret(name: str) -> bool:
    """PWD, PASSWORD, TOKEN or SECRET in the name (REDISCLI_AUTH and PGPASSWORD too)."""
    return any(word in name.upper() for word in SECRET_WORDS)


def environment(
    process: str | None, base: Mapping[str, str], dotenv: Mapping[str, str | None]
) -> dict[str, str]:
    """`dotenv` under `base` (the caller's environment), without any secret but the ones
    `process` holds (None: no secret at all), and without `.env` reading."""
    merged = {k: v for k, v in dotenv.items() if v is not None}
    merged.update(base)
    env = {k: v for k, v in merged.items() if not is_secret(k)}
    for name in PROCESS_SECRETS[process] if process else ():
        if merged.get(name):
            env[name] = merged[name]
    env[ENV_FILE_VARIABLE] = ""
    return env


def process_env(process: str | None) -> dict[str, str]:
    """The environment stack.py starts one process of the stack with: its own secrets only, and
    it reads no `.env` itself. `None`: no secret at all (supervisord)."""
    return _for_children(environment(process, os.environ, dotenv_values(ROOT / ".env")))


def child_env(settings: Settings) -> dict[str, str]:
    """`.env` under the caller's environment, plus what the children need: every secret, for
    the processes the tests start themselves. Never printed."""
    env = {k: v for k, v in dotenv_values(ROOT / ".env").items() if v is not None}
    env.update(os.environ)
    env.setdefault("FLYWAY_PASSWORD", settings.db_admin_pwd.get_secret_value())
    return _for_children(env)


def _for_children(env: dict[str, str]) -> dict[str, str]:
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def secrets_file(process: str) -> Path:
    return ROOT / ".local" / "run" / f"{process}.secrets.json"


def write_secrets(process: str, base: Mapping[str, str]) -> Path:
    """The process's own secrets (`base`, the caller's environment, over `.env`) in a new 0600
    file that never follows a link (a link or another's file there is refused): what launch.py
    gives the process at each (re)start."""
    merged = {k: v for k, v in dotenv_values(ROOT / ".env").items() if v is not None}
    merged.update(base)
    own = {name: merged[name] for name in PROCESS_SECRETS[process] if merged.get(name)}
    return write_private(secrets_file(process), json.dumps(own))


def fresh_dir(path: Path) -> Path:
    """An empty private folder for prometheus-client's multiprocess files: the counts of the
    API processes before this (re)start are gone with them."""
    path.mkdir(mode=0o700, exist_ok=True)
    for old in path.glob("*.db"):
        old.unlink()
    return path


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in PROCESS_SECRETS or argv[1] != "--":
        known = "|".join(PROCESS_SECRETS)
        print(f"usage: launch.py ({known}) -- COMMAND [ARG ...]", file=sys.stderr)
        return 2
    process, command = argv[0], argv[2:]
    settings = dotenv_values(ROOT / ".env")
    if secrets_file(process).exists():
        settings.update(json.loads(secrets_file(process).read_text()))
    env = environment(process, os.environ, settings)
    if process == "api":  # every uvicorn process's metrics, summed by /metrics (core/metrics.py)
        env.setdefault(MULTIPROC_VARIABLE, str(fresh_dir(ROOT / ".local" / "run" / "metrics")))
    os.execvpe(command[0], command, env)  # noqa: S606 - the command is stack.py's own


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
