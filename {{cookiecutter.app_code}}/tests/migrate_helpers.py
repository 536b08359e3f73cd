"""Helpers the native Flyway applier's unit and integration tests share."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest


def write(root: Path, name: str, text: str = "SELECT 1;\n") -> Path:
    """A migration file (folders made as needed)."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def use_flyway_env(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str] | None = None) -> None:
    """Exactly these FLYWAY_* variables for the command line (none of the developer's own)."""
    for key in list(os.environ):
        if key.startswith("FLYWAY_"):
            monkeypatch.delenv(key)
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
