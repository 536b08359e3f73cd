"""One psycopg `AsyncConnectionPool` per role, opened once at startup and closed at shutdown."""

from __future__ import annotations

import enum
from time import monotonic
from types import TracebackType

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from ..core.config import Settings


class Role(enum.StrEnum):
    """The three database roles; each process uses the least it needs."""

    ADMIN = "admin"  # bootstrap, migrations, tests
    DATA = "data"  # the worker
    APP = "app"  # the API


class DatabaseUnavailable(RuntimeError):
    """PostgreSQL cannot be reached or refused the connection; callers answer 503."""


class InvalidValue(ValueError):
    """PostgreSQL cannot take a value the caller sent (a NUL character, a number out of range);
    callers answer 422."""


class Connection(psycopg.AsyncConnection[DictRow]):
    """A pooled connection that knows when it was last given back to its pool."""

    returned_at: float = float("-inf")


Pool = AsyncConnectionPool[Connection]

# A connection given back less than this long ago is handed out unchecked: it just worked, and
# checking it costs every request a round trip (7-20% of the API's CPU per submission, by
# make bench's CPU meters). One idle longer is checked, so after a PostgreSQL restart a
# request gets a fresh connection, not the dead one.
CHECK_IDLE_AFTER_S = 1.0


async def _check_if_idle(conn: Connection) -> None:
    if monotonic() - conn.returned_at > CHECK_IDLE_AFTER_S:
        await AsyncConnectionPool.check_connection(conn)


async def _returned(conn: Connection) -> None:
    conn.returned_at = monotonic()


def dead_link_timeout(settings: Settings) -> float:
    """Seconds a connection waits for PostgreSQL to acknowledge what it sent before it counts
    as broken: twice DB_CONNECT_TIMEOUT (libpq's tcp_user_timeout; Linux).

    A slow query is not cut (the server acknowledges it at once, however long it runs): only
    a server that does not answer at all, as when its host is cut off the network. Without it
    a query sent then waited for TCP's retransmissions (15 minutes), and a job that was
    writing to the ledger outlived arq's timeout and ended `failed` (the template's
    tests/test_hosts.py).
    """
    return 2 * settings.db_connect_timeout


def keepalive_idle(settings: Settings) -> int:
    """Seconds an idle connection waits before its first keepalive probe."""
    return max(1, round(dead_link_timeout(settings)))


def conninfo(settings: Settings, role: Role) -> str:
    """Connection string built by libpq's own rules, so any password character is safe."""
    user = {
        Role.ADMIN: settings.db_admin_user,
        Role.DATA: settings.db_data_user,
        Role.APP: settings.db_app_user,
    }[role]
    return make_conninfo(
        host=settings.db_host,
        port=settings.db_port,
        dbname=settings.db_name,
        user=user,
        password=settings.db_password(user).get_secret_value(),
        connect_timeout=max(1, round(settings.db_connect_timeout)),
        tcp_user_timeout=round(dead_link_timeout(settings) * 1000),
        # An idle connection finds out too, and so does the server about a client that went
        # away (its session, and an advisory lock it held, would otherwise last the server's
        # 2 h keepalive: the dispatcher's leader lock did, across hosts): probes after
        # dead_link_timeout idle, two of them 1 s apart.
        keepalives=1,
        keepalives_idle=keepalive_idle(settings),
        keepalives_interval=1,
        keepalives_count=2,
        application_name=f"{settings.app_code}-{role}",
        # Queries name tables without a schema; the pool pins the search path. The server's
        # side of the keepalives above.
        options=f"-c search_path={settings.db_schema} "
        f"-c tcp_keepalives_idle={keepalive_idle(settings)} -c tcp_keepalives_interval=1 "
        "-c tcp_keepalives_count=2",
        # TLS (DB_SSLMODE, DB_SSLROOTCERT); make_conninfo leaves out a None.
        sslmode=settings.db_sslmode,
        sslrootcert=settings.db_sslrootcert,
    )


class Database:
    """The pools of the roles a process uses. `async with Database(s, Role.APP) as db: ...`."""

    def __init__(self, settings: Settings, *roles: Role) -> None:
        self.settings = settings
        self.pools: dict[Role, Pool] = {
            role: AsyncConnectionPool(
                conninfo(settings, role),
                min_size=settings.db_pool_min_size,
                max_size=settings.db_pool_max_size,
                kwargs={"autocommit": True, "row_factory": dict_row},
                connection_class=Connection,
                timeout=settings.db_connect_timeout,
                # Checked (an empty query) when handed out after CHECK_IDLE_AFTER_S in the pool.
                check=_check_if_idle,
                reset=_returned,
                # A failing reconnect gives up soon, so the next request starts a fresh attempt
                # at once: the pool is back within a second or two of PostgreSQL, not after a
                # backoff that grows with the length of the outage.
                reconnect_timeout=max(5.0, 2 * settings.db_connect_timeout),
                name=f"{settings.app_code}-{role}",
                open=False,
            )
            for role in roles or tuple(Role)
        }

    def __getitem__(self, role: Role) -> Pool:
        try:
            return self.pools[role]
        except KeyError:
            opened = ", ".join(self.pools)
            raise KeyError(
                f"the {role} pool is not open in this process (open: {opened})"
            ) from None

    async def open(self, *, wait: bool = True) -> None:
        """Open every pool; with `wait`, fail now with a clear error if PostgreSQL is not there."""
        for role, pool in self.pools.items():
            try:
                await pool.open(wait=wait, timeout=self.settings.db_connect_timeout * 2)
            except PoolTimeout as exc:
                await self.close()
                s = self.settings
                raise DatabaseUnavailable(
                    f"cannot connect to PostgreSQL at {s.db_host}:{s.db_port} as the {role} role "
                    f"({s.db_name}, DB_SSLMODE={s.db_sslmode}): is the stack up (make up) and "
                    ".env current? (for a managed server: are DB_SSLMODE and DB_SSLROOTCERT "
                    "right?)"
                ) from exc

    async def close(self) -> None:
        for pool in self.pools.values():
            await pool.close()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
