"""Least privilege: each running process holds its own credentials and no others, and the admin
role that owns the database is no superuser."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import psycopg
import pytest

from {{ cookiecutter.app_code }}.core.config import PROCESS_SECRETS, Settings
from {{ cookiecutter.app_code }}.db.pool import Role, conninfo

from .conftest import Ledger

pytestmark = pytest.mark.reliability


def every_secret(settings: Settings) -> dict[str, str]:
    """Every secret in `.env`, by name (the tests read `.env`; the services do not)."""
    names = {name for names in PROCESS_SECRETS.values() for name in names}
    values = {name: getattr(settings, name.lower()).get_secret_value() for name in names}
    assert all(values.values()), "a secret is empty in .env: the test would prove nothing"
    return values


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode(errors="replace") for k, v in pairs}


@pytest.mark.parametrize("process", ["api", "worker"])
def test_each_process_holds_its_own_secrets_and_no_others(
    stack: ModuleType, settings: Settings, process: str
) -> None:
    pid = stack.read_pid(process)
    assert pid, f"the stack's {process} is not running"
    env = environ(pid)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    own = set(PROCESS_SECRETS[process])
    for name, value in every_secret(settings).items():
        held = {key for key, seen in env.items() if value in seen}
        if name in own:
            assert held == {name}, f"the {process} holds {name} as {held or 'nothing'}"
        else:
            assert not held, f"the {process} holds {name}, which is not its own (as {held})"
        assert value not in cmdline, f"{name} is on the {process}'s command line"
    assert env.get("SETTINGS_ENV_FILE") == "", f"the {process} may read .env itself"


def test_supervisord_holds_no_secret(stack: ModuleType, settings: Settings) -> None:
    pid = stack.read_pid("supervisord")
    assert pid, "supervisord is not running"
    env = environ(pid)
    for name, value in every_secret(settings).items():
        assert not any(value in seen for seen in env.values()), f"supervisord holds {name}"


def test_the_admin_role_owns_the_database_but_is_no_superuser(
    settings: Settings, ledger: Ledger
) -> None:
    role = ledger.one(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls "
        "FROM pg_roles WHERE rolname = current_user"
    )
    assert not any(role.values()), role
    owner = ledger.one(
        "SELECT pg_get_userbyid(datdba) AS owner FROM pg_database "
        "WHERE datname = current_database()"
    )
    assert owner["owner"] == settings.db_admin_user
    for refused in (
        "CREATE ROLE lp_intruder LOGIN SUPERUSER",
        "COPY (SELECT 1) TO PROGRAM 'true'",
        "SET log_statement = 'all'",  # a superuser's setting
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            ledger.rows(refused)


def test_the_api_role_cancels_and_retries_only_through_its_functions(
    settings: Settings, ledger: Ledger
) -> None:
    """V7: the API's role got EXECUTE on two SECURITY DEFINER functions, not UPDATE on job."""
    with psycopg.connect(conninfo(settings, Role.APP), autocommit=True) as conn:
        for statement in ("UPDATE job SET status = 'cancelled'", "DELETE FROM job"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)  # type: ignore[arg-type]
        assert conn.execute("SELECT * FROM cancel_job('lp-no-such-job')").fetchall() == []
        assert conn.execute("SELECT * FROM retry_jobs(ARRAY['lp-no-such-job'])").fetchall() == []
    functions = ledger.rows(
        "SELECT p.proname, p.prosecdef, p.proconfig, pg_get_userbyid(p.proowner) AS owner, "
        "has_function_privilege(%(app)s, p.oid, 'EXECUTE') AS app, "
        "has_function_privilege(%(data)s, p.oid, 'EXECUTE') AS data, "
        "has_function_privilege('public', p.oid, 'EXECUTE') AS public "
        "FROM pg_proc AS p WHERE p.pronamespace = %(schema)s::regnamespace "
        "AND p.proname IN ('cancel_job', 'retry_jobs')",
        {"app": settings.db_app_user, "data": settings.db_data_user, "schema": settings.db_schema},
    )
    assert len(functions) == 2, functions
    for f in functions:
        assert f["prosecdef"] and f["owner"] == settings.db_admin_user, f
        assert any(c.startswith("search_path=") for c in f["proconfig"] or []), f
        assert (f["app"], f["data"], f["public"]) == (True, False, False), f
    privileges = ledger.rows(
        "SELECT privilege_type FROM information_schema.role_table_grants "
        "WHERE grantee = %s AND table_schema = %s AND table_name = 'job'",
        [settings.db_app_user, settings.db_schema],
    )
    assert {p["privilege_type"] for p in privileges} <= {"SELECT", "INSERT"}, privileges
