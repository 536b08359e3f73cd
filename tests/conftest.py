"""Fixtures shared by the template tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def project_python() -> str:
    """The interpreter that has the rendered projects' locked dependencies.

    nox builds one environment per run and passes it as TEMPLATE_TEST_PYTHON, so the bakes
    share it instead of each building its own.
    """
    python = os.environ.get("TEMPLATE_TEST_PYTHON", sys.executable)
    probe = [python, "-c", "import fastapi, arq, psycopg_pool, ruff, mypy"]
    if subprocess.run(probe, capture_output=True, check=False).returncode != 0:
        pytest.fail(
            f"{python} lacks the rendered project's dependencies: run the tests with `nox`, "
            "or set TEMPLATE_TEST_PYTHON to an interpreter that has them",
            pytrace=False,
        )
    return python


@pytest.fixture(scope="session")
def tool():
    """Path of a command-line tool installed beside the test interpreter, or on PATH."""

    def find(name: str) -> str:
        beside = Path(sys.executable).parent / name
        found = str(beside) if beside.exists() else shutil.which(name)
        if not found:
            pytest.fail(f"{name} is not installed: run the tests with `nox`", pytrace=False)
        return found

    return find
