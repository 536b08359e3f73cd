"""The applier's one error type and the shape of its output, shared by every module."""

from __future__ import annotations

from collections.abc import Callable

# Where progress lines go: print by default, a list's append in tests.
Out = Callable[[str], object]


class MigrationError(Exception):
    """A problem the operator must fix; the message says what and where (never a password)."""
