"""Refuse bad answers before cookiecutter writes the project.

Cookiecutter does not validate answers: a bad one renders a project that fails later (a port
that collides, a schema named after an SQL keyword, a cron the worker cannot schedule), far
from the prompt that caused it. This hook checks every answer, prints one line per problem to
stderr (what was given, what is allowed) and exits 1; it prints nothing when all is well.
Standard library only: it runs under whatever Python runs cookiecutter.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import keyword
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote

# The answers as percent-encoded JSON. Percent-encoding leaves only letters, digits, "_.-~/"
# and "%", so no answer (quotes, backslashes, newlines, ''') can break this file's syntax.
ANSWERS: dict[str, object] = json.loads(unquote("{{ cookiecutter | jsonify | urlencode }}"))
# The literal template folder; raw so Jinja does not render it into the answer.
TEMPLATE_DIR = "{% raw %}{{cookiecutter.app_code}}{% endraw %}"

APP_CODE_RE = re.compile(r"[a-z][a-z0-9]{1,19}")
# No sign, no leading zero, no "_", ASCII digits only: int() alone accepts all of those.
WHOLE_NUMBER_RE = re.compile(r"[1-9][0-9]*")
PORT_KEYS = ("api_host_port", "db_host_port", "redis_host_port")
TEXT_KEYS = ("project_name", "description", "author")
CRON_KEYS = ("hello_cron", "cleanup_cron")

# PostgreSQL 15 reserved key words ("reserved" and "reserved (can be function or type)"):
# app_code names the schema, so one of these would need quoting in every SQL statement.
PG_RESERVED = frozenset(
    """
    all analyse analyze and any array as asc asymmetric authorization binary both case cast
    check collate collation column concurrently constraint create cross current_catalog
    current_date current_role current_schema current_time current_timestamp current_user
    default deferrable desc distinct do else end except false fetch for foreign freeze from
    full grant group having ilike in initially inner intersect into is isnull join lateral
    leading left like limit localtime localtimestamp natural not notnull null offset on only
    or order outer overlaps placing primary references returning right select session_user
    similar some symmetric system_user table tablesample then to trailing true union unique
    user using variadic verbose when where window with
    """.split()  # noqa: SIM905 - a word list reads better than 100 quoted strings
)
# app_code is the top-level package under src/: it must not shadow what the project imports.
# The standard library comes from the running Python; third-party and layout names are listed.
SHADOWED = frozenset(getattr(sys, "stdlib_module_names", ())) | frozenset(
    """
    test tests src app conftest arq redis hiredis fastapi starlette pydantic pydantic_core
    psycopg psycopg_pool jinja2 markupsafe uvicorn uvloop httptools watchfiles websockets
    h11 anyio sniffio idna certifi httpx httpcore pytest mypy ruff playwright hatchling dotenv
    yaml click typing_extensions annotated_types typing json os sys queue asyncio logging
    secrets string types abc email http select
    """.split()  # noqa: SIM905
)


def check_app_code(value: str) -> list[str]:
    """app_code names the package, database, schema, roles and containers: keep it plain."""
    if not APP_CODE_RE.fullmatch(value):
        rule = "2-20 characters, a lowercase letter then lowercase letters or digits"
        return [f"app_code: {value!r} is not allowed: use {rule} (e.g. 'billing42')"]
    if keyword.iskeyword(value) or keyword.issoftkeyword(value) or value == "type":
        problem = "is a Python keyword, so the package could not be imported"
    elif value in PG_RESERVED:
        problem = "is a PostgreSQL reserved word and would name the schema"
    elif value in SHADOWED:
        problem = f"would shadow the Python module {value!r} the project needs"
    else:
        return []
    return [f"app_code: {value!r} {problem}; pick another name, e.g. '{value[:17]}svc'"]


def check_text(name: str, value: str) -> list[str]:
    """These go into TOML and Python strings: one line, no quote, backslash or control char."""
    if not value.strip():
        return [f"{name}: must not be empty; give one line of text"]
    bad = sorted({ch for ch in value if ch in '"\\' or ord(ch) < 32 or ord(ch) == 127})
    if bad:
        found = ", ".join(map(repr, bad))
        rule = 'one line without double quotes ("), backslashes or control characters'
        return [f"{name}: {value!r} contains {found}; use {rule} (it goes into TOML strings)"]
    return []


def check_ports(ports: dict[str, str]) -> list[str]:
    """Each service publishes its own host port; below 1024 needs root."""
    problems = [
        f"{name}: {value!r} is not allowed: use a whole number 1024-65535"
        for name, value in ports.items()
        if not (WHOLE_NUMBER_RE.fullmatch(value) and 1024 <= int(value) <= 65535)
    ]
    by_value: dict[str, list[str]] = {}
    for name, value in ports.items():
        by_value.setdefault(value, []).append(name)
    for value, names in by_value.items():
        if len(names) > 1:
            problems.append(
                f"{' and '.join(names)}: {value!r} is given {len(names)} times; "
                "give each service its own host port"
            )
    return problems


def check_ttl(value: str) -> list[str]:
    """Redis keeps job keys this long: at least an hour, at most 30 days."""
    if WHOLE_NUMBER_RE.fullmatch(value) and 1 <= int(value) <= 720:
        return []
    return [f"key_ttl_hours: {value!r} is not allowed: use whole hours 1-720 (30 days)"]


def check_python_version(value: str, choices: list[str]) -> list[str]:
    """Only the versions the lock file and images are built for."""
    if value in choices:
        return []
    offered = ", ".join(choices)
    return [f"python_version: {value!r} is not offered: choose one of {offered}"]


def template_root(repo_dir: str) -> Path:
    """The template checkout as an absolute path.

    `_repo_dir` is relative when cookiecutter is given a relative path (`cookiecutter .`),
    and this hook runs in the new project's folder. Cookiecutter runs hooks from inside the
    template folder, so its own working directory (Linux: /proc/<parent>/cwd) is the
    template; elsewhere the relative path is resolved against the launching shell's $PWD.
    """
    path = Path(repo_dir)
    if path.is_absolute():
        return path
    candidates = [Path(os.environ.get("PWD", ".")) / path]
    with contextlib.suppress(OSError):
        candidates.insert(0, Path(f"/proc/{os.getppid()}/cwd").resolve())
    for candidate in candidates:
        if (candidate / TEMPLATE_DIR).is_dir():
            return candidate.resolve()
    return path.resolve()


def load_cron_parser(repo_dir: Path) -> Callable[[str], object]:
    """Load the project's own cron parser from the template checkout.

    One parser, one truth: the hook refuses exactly what the worker would refuse, with the same
    message, and a fix to the parser needs no copy here. It is standard library only.
    """
    path = repo_dir / TEMPLATE_DIR / "src" / TEMPLATE_DIR / "core" / "cron.py"
    spec = importlib.util.spec_from_file_location("_template_cron", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parse: Callable[[str], object] = module.parse_cron
    return parse


def check_cron(name: str, value: str, parse: Callable[[str], object]) -> list[str]:
    """The worker schedules these with arq; the parser's message says what to change."""
    try:
        parse(value)
    except ValueError as exc:  # CronError
        return [f"{name}: {exc}"]
    return []


def validate(answers: dict[str, object]) -> list[str]:
    """Every problem with the answers, one line each; empty when all are good."""
    text = {key: str(value) for key, value in answers.items()}
    repo_dir = template_root(text["_repo_dir"])
    problems = check_app_code(text.get("app_code", ""))
    for name in TEXT_KEYS:
        problems += check_text(name, text.get(name, ""))
    problems += check_ports({name: text.get(name, "") for name in PORT_KEYS})
    problems += check_ttl(text.get("key_ttl_hours", ""))
    try:
        parse = load_cron_parser(repo_dir)
    except (OSError, ImportError) as exc:  # a broken template, not a bad answer
        return [*problems, f"template: cannot load the cron parser: {exc}"]
    for name in CRON_KEYS:
        problems += check_cron(name, text.get(name, ""), parse)
    template = json.loads((repo_dir / "cookiecutter.json").read_text(encoding="utf-8"))
    version = text.get("python_version", "")
    problems += check_python_version(version, template["python_version"])
    return problems


def main() -> None:
    problems = validate(ANSWERS)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
