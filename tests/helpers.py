"""Helpers the template tests share: the template's path, baking, running commands, reading a
rendered project's README and .env, and the generation hooks as modules."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

TEMPLATE = Path(__file__).resolve().parents[1]
PROJECT_TEMPLATE = "{{cookiecutter.app_code}}"  # the template's project folder, by name
ENV_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)")


def load_hook(name: str) -> ModuleType:
    """hooks/<name>.py as a module: the hooks read cookiecutter's answers only in main()."""
    path = TEMPLATE / "hooks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pre_gen = load_hook("pre_gen_project")
post_gen = load_hook("post_gen_project")
# What the generation hook writes into .env, fresh each render: its own list, the one home.
SECRET_KEYS: tuple[str, ...] = post_gen.SECRET_KEYS


def bake_result(cookies, context: dict[str, str] | None = None, template: Path | None = None):
    """pytest-cookies' result of one render (success or not)."""
    return cookies.bake(extra_context=context or {}, template=str(template or TEMPLATE))


def bake(cookies, context: dict[str, str] | None = None, template: Path | None = None) -> Path:
    """Render one project, which must succeed; its folder."""
    result = bake_result(cookies, context, template)
    assert result.exit_code == 0, result.exception
    assert result.exception is None
    return Path(result.project_path)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment less pytest's and nox's virtualenv variables (a child with
    them would install into, or run from, the shared test interpreter), plus `extra`."""
    drop = ("PYTEST_", "VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)}, **extra}


def run(
    argv: list[str], cwd: Path, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion (never raising on its exit code), output captured."""
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        env={**os.environ, **env},
    )


def shell(cwd: Path, env: dict[str, str], timeout: float = 300, explain=lambda: ""):
    """A runner of README-style shell lines (bash, -euo pipefail) in `cwd` that must succeed.

    `env` is read at each call (a caller may change it in between); `explain()` adds to the
    failure message (the stack's logs, say)."""

    def sh(command: str, **extra: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=cwd,
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"$ {command}\n{done.stdout}{done.stderr}\n{explain()}"
        return done

    return sh


def readme_block(project: Path, marker: str) -> str:
    """The text of the README's first ```shell block that contains `marker`."""
    blocks = re.findall(r"```shell\n(.*?)```", (project / "README.md").read_text(), re.S)
    found = next((b for b in blocks if marker in b), None)
    assert found is not None, f"the README has no shell block with {marker!r}"
    return str(found)


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blank lines skipped)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return {m[1]: m[2] for m in map(ENV_LINE.fullmatch, lines) if m}


# --- Throwaway copies of the template, and projects linked to them with cruft

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def copy_template(dest: Path) -> Path:
    """A scratch copy of the template's files (no history, caches or environments)."""
    ignore = shutil.ignore_patterns(".git", ".nox", "*cache*", ".benchmarks", ".venv")
    shutil.copytree(TEMPLATE, dest, ignore=ignore)
    return dest


def git(repo: Path, *args: str) -> str:
    """`git -C repo ARGS`, which must succeed; its output, stripped."""
    done = run(["git", "-C", str(repo), *args], repo, **GIT_IDENTITY)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def commit_all(repo: Path, message: str) -> str:
    """Commit every change in repo; the new commit's id."""
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


def template_repo(dest: Path) -> Path:
    """A git repository of the template's files with one commit, to change and commit again."""
    copy_template(dest)
    git(dest, "init", "-q")
    commit_all(dest, "one")
    return dest


def cruft_project(template: Path, out: Path, tool, context: dict[str, str] | None = None) -> Path:
    """`cruft create` of the template's HEAD, committed in the project's own git repository."""
    argv = [tool("cruft"), "create", "-y", "--output-dir", str(out), str(template)]
    if context:
        argv += ["--extra-context", json.dumps(context)]
    done = run(argv, out.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    [project] = out.iterdir()
    git(project, "init", "-q")
    commit_all(project, "rendered with cruft")
    return project
