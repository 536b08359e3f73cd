"""PostgreSQL: one pool per role, named SQL, and the helper verbs that run it."""

from .helpers import execute_one, get_many, get_one, put_many
from .pool import Database, DatabaseUnavailable, Role
from .queries import UnknownQuery, query

__all__ = [
    "Database",
    "DatabaseUnavailable",
    "Role",
    "UnknownQuery",
    "execute_one",
    "get_many",
    "get_one",
    "put_many",
    "query",
]
