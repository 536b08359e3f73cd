"""Refuse bad answers before cookiecutter writes the project.

Cookiecutter does not validate answers: a bad one renders a project that fails later (a port
that collides, a schema named after an SQL keyword), far from the prompt that caused it. This
hook checks every answer but the crons, prints one line per problem to stderr (what was given,
what is allowed) and exits 1; it prints nothing when all is well. The crons are checked after
rendering by the post-generation hook, with the rendered project's own parser. Standard library
only: it runs under whatever Python runs cookiecutter. Importable (the answers are read in
`main()`), so the template's tests call its functions directly.
"""

from __future__ import annotations

import json
import keyword
import re
import sys
from urllib.parse import unquote

# The answers as percent-encoded JSON, filled in by cookiecutter when it renders this hook.
# Percent-encoding leaves only letters, digits, "_.-~/" and "%", so no answer (quotes,
# backslashes, newlines, ''') can break this file's syntax.
RENDERED_ANSWERS = "{{ cookiecutter | jsonify | urlencode }}"

APP_CODE_RE = re.compile(r"[a-z][a-z0-9]{1,19}")
# No sign, no leading zero, no "_", ASCII digits only: int() alone accepts all of those.
WHOLE_NUMBER_RE = re.compile(r"[1-9][0-9]*")
PORT_KEYS = ("api_host_port", "db_host_port", "redis_host_port")
TEXT_KEYS = ("project_name", "description", "author")
# cookiecutter.json's python_version choices (test_hook_functions.py checks they agree).
# Cookiecutter refuses any other answer itself, except from a replay file, which it does not
# check: this list is for that case, where the hook has nothing else to compare with.
PYTHON_VERSIONS = ("3.12", "3.13", "3.11")

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


def check_python_version(value: str) -> list[str]:
    """Only the versions the lock file and images are built for."""
    if value in PYTHON_VERSIONS:
        return []
    offered = ", ".join(PYTHON_VERSIONS)
    return [f"python_version: {value!r} is not offered: choose one of {offered}"]


def validate(answers: dict[str, object]) -> list[str]:
    """Every problem with the answers (the crons aside), one line each; empty when all are good."""
    text = {key: str(value) for key, value in answers.items()}
    problems = check_app_code(text.get("app_code", ""))
    for name in TEXT_KEYS:
        problems += check_text(name, text.get(name, ""))
    problems += check_ports({name: text.get(name, "") for name in PORT_KEYS})
    problems += check_ttl(text.get("key_ttl_hours", ""))
    problems += check_python_version(text.get("python_version", ""))
    return problems


def main() -> None:
    problems = validate(json.loads(unquote(RENDERED_ANSWERS)))
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
