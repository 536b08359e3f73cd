#!/usr/bin/env python3
"""Write the Kubernetes Secrets' env files from `.env`: one per process, its own secrets only.

`make k8s-secrets` runs this. kustomize's secretGenerator (deploy/k8s/base and overlays/dev)
turns each file into a Secret: the API's, the worker's and the migration Job's hold exactly what
PROCESS_SECRETS in core/config.py gives them (as compose hands them out); the dev overlay's
PostgreSQL holds the bootstrap's, its Redis its own password. The files are new 0600 files in
0700 `secrets/` folders that git and docker ignore; the values are read from `.env` (the
environment wins, as for every setting) and never printed or passed on a command line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "deploy" / "local"))  # stack_processes: private files

from dotenv import dotenv_values  # noqa: E402
from stack_processes import StackError, private_dir, write_private  # noqa: E402

from {{ cookiecutter.app_code }}.core.config import PROCESS_SECRETS  # noqa: E402

BASE = HERE / "base" / "secrets"
DEV = HERE / "overlays" / "dev" / "secrets"
# Which env file holds whose secrets; the kustomizations' secretGenerators read these paths.
FILES: dict[str, tuple[Path, tuple[str, ...]]] = {
    "api": (BASE / "api.env", PROCESS_SECRETS["api"]),
    "worker": (BASE / "worker.env", PROCESS_SECRETS["worker"]),
    "migrate": (BASE / "migrate.env", PROCESS_SECRETS["migrate"]),
    "postgres": (DEV / "postgres.env", PROCESS_SECRETS["bootstrap"]),
    "redis": (DEV / "redis.env", ("REDIS_PASSWORD",)),
}


class SecretsError(RuntimeError):
    """A secret that cannot go into an env file; the message says which and what to do."""


def env_text(names: tuple[str, ...], values: Mapping[str, str]) -> str:
    """`NAME=value` lines, as kustomize reads them: the value verbatim up to the line's end."""
    lines = []
    for name in names:
        value = values.get(name, "")
        if not value:
            raise SecretsError(
                f"{name} is not set: add it to .env (make k8s-secrets writes every process's "
                "secrets from there)"
            )
        if "\n" in value or "\r" in value or "\0" in value:
            raise SecretsError(
                f"{name} holds a line break or NUL, which an env file cannot carry: give it a "
                'value of one line (python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        lines.append(f"{name}={value}")
    return "\n".join(lines) + "\n"


def write_all(values: Mapping[str, str]) -> list[Path]:
    """Every process's file, or none: all values are checked before the first is written."""
    texts = {path: env_text(names, values) for path, names in FILES.values()}
    for path, text in texts.items():
        private_dir(path.parent)
        write_private(path, text)
    return list(texts)


def main() -> int:
    values = {k: v for k, v in dotenv_values(ROOT / ".env").items() if v is not None}
    values.update(os.environ)
    try:
        written = write_all(values)
    except (SecretsError, StackError) as exc:
        print(f"[{{ cookiecutter.app_code }}] k8s-secrets: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"[{{ cookiecutter.app_code }}] wrote {path.relative_to(ROOT)} (0600)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
