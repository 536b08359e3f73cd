"""Finish the generated project: check the crons, a private .env with fresh secrets, runnable
scripts, next steps.

Runs inside the generated project directory, under whatever Python runs cookiecutter, so it
uses the standard library only. Secrets are made here, never asked for: they stay out of the
cookiecutter context, the replay file, stdout and logs. Importable (the answers are read in
`main()`), so the template's tests call its functions directly.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

# The answers as percent-encoded JSON, filled in by cookiecutter when it renders this hook, so
# no answer can break this file's syntax.
RENDERED_ANSWERS = "{{ cookiecutter | jsonify | urlencode }}"
CRON_KEYS = ("hello_cron", "cleanup_cron")

SECRET_KEYS = (
    "DB_BOOTSTRAP_PWD",
    "DB_ADMIN_PWD",
    "DB_DATA_PWD",
    "DB_APP_PWD",
    "REDIS_PASSWORD",
    "API_TOKEN",
    "API_READ_TOKEN",
    "SESSION_SECRET",
)
ENV_LINE_RE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)")
SKIP_DIRS = frozenset({".git", ".venv", "node_modules", ".mypy_cache", ".ruff_cache"})


class HookError(Exception):
    """A problem in the template itself; the message says which file to fix."""


def cron_parser(project: Path, app_code: str) -> Path:
    """Where the rendered project keeps its cron parser (the worker's own)."""
    return project / "src" / app_code / "core" / "cron.py"


def load_cron_parser(path: Path) -> Callable[[str], object]:
    """The rendered project's own cron parser (standard library only).

    One parser, one truth: the hook refuses exactly what the worker would refuse, with the same
    message, and a fix to the parser needs no copy here.
    """
    spec = importlib.util.spec_from_file_location("_project_cron", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise HookError(f"template: cannot load the cron parser: {path} is missing")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parse: Callable[[str], object] = module.parse_cron
    return parse


def check_crons(answers: dict[str, object], parse: Callable[[str], object]) -> list[str]:
    """One line per cron the worker could not schedule; the parser's message says what to change."""
    problems = []
    for name in CRON_KEYS:
        try:
            parse(str(answers.get(name, "")))
        except ValueError as exc:  # CronError
            problems.append(f"{name}: {exc}")
    return problems


def parse_env(text: str) -> dict[str, str]:
    """KEY=VALUE pairs of an env file's text (comments and blank lines skipped)."""
    pairs = (ENV_LINE_RE.fullmatch(line) for line in text.splitlines())
    return {m[1]: m[2] for m in pairs if m}


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE pairs of an env file; {} if it is missing."""
    return parse_env(path.read_text("utf-8")) if path.exists() else {}


def render_env(example: str, previous: dict[str, str]) -> str:
    """.env.example with its blank secrets filled.

    On a re-render over an existing project (overwrite), the old .env keeps its non-empty
    secrets, so a running stack (database roles, Redis, API clients) keeps working; every other
    value follows the new answers in .env.example, and keys the example does not have (added
    by hand) are carried over at the end instead of being lost.
    """
    lines, seen = [], set()
    for line in example.splitlines():
        match = ENV_LINE_RE.fullmatch(line)
        if match and match[1] in SECRET_KEYS:
            if match[2].strip():
                raise HookError(
                    f".env.example sets {match[1]}; leave it blank (a value shared by every "
                    "generated project is not a secret) and this hook fills it"
                )
            value = previous.get(match[1], "").strip() or secrets.token_urlsafe(32)
            line = f"{match[1]}={value}"
        if match:
            seen.add(match[1])
        lines.append(line)
    missing = [key for key in SECRET_KEYS if key not in seen]
    if missing:
        raise HookError(f".env.example has no {', '.join(k + '=' for k in missing)} line")
    extra = [f"{key}={value}" for key, value in previous.items() if key not in seen]
    if extra:
        lines += ["", "# Kept from the previous .env (not in .env.example):", *extra]
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str) -> None:
    """Write via a 0600 temporary file and rename, so the secrets are never world-readable."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_env(project: Path) -> None:
    example = project / ".env.example"
    if not example.exists():
        raise HookError(f"{example} is missing; the template must provide it to build .env")
    env = project / ".env"
    write_private(env, render_env(example.read_text("utf-8"), read_env(env)))


CRUFT_FILE = ".cruft.json"
# Context keys of this machine or this run, not the project: kept out of .cruft.json (the
# checkout has its own field there).
MACHINE_KEYS = frozenset({"_repo_dir", "_output_dir", "_checkout"})
REMOTE_RE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|gh:|gl:|bb:|[^/]+@[^/]+:)")


def run_git(repo: Path, *args: str) -> str | None:
    """`git -C repo ARGS`'s output, or None when git is missing or says no."""
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def template_checkout(answers: dict[str, object]) -> Path | None:
    """The template's folder on this machine, or None when the hook cannot tell.

    Cookiecutter passes `_repo_dir`: its own clone of a remote template (absolute), or the path
    it was given. A relative path is relative to the folder cookiecutter was started in, which
    this hook (running in the new project) cannot see: the shell's $PWD is taken, and only if
    it holds this template (a cookiecutter.json with the same _template_version).
    """
    given = str(answers.get("_repo_dir") or "")
    if not given:
        return None
    repo = Path(given)
    if not repo.is_absolute():
        repo = Path(os.environ.get("PWD") or "/nonexistent") / repo
    try:
        context = json.loads((repo / "cookiecutter.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if context.get("_template_version") != answers.get("_template_version"):
        return None
    return repo.resolve()


def template_link(answers: dict[str, object]) -> tuple[str, str] | str:
    """(template source, commit) for .cruft.json, or the reason there is none.

    The commit is the checkout's HEAD (`git rev-parse HEAD`), the commit cookiecutter rendered
    when the checkout is clean. The source is what `cruft update` will clone again: the
    remote's URL when cookiecutter cloned one (gh:, https:, git@), else the checkout's path.
    """
    repo = template_checkout(answers)
    if repo is None:
        return "cannot tell where the template is (a relative path given from another folder)"
    commit = run_git(repo, "rev-parse", "HEAD")
    if commit is None:
        return f"{repo} is not a git checkout"
    source = str(repo)
    if REMOTE_RE.match(str(answers.get("_template", ""))):
        source = run_git(repo, "remote", "get-url", "origin") or str(answers["_template"])
    return source, commit


def cruft_skip(project: Path) -> list[str]:
    """pyproject.toml's `[tool.cruft] skip`, the one list of what updates never touch."""
    try:
        import tomllib
    except ImportError:  # Python < 3.11: cruft reads pyproject.toml's list itself
        return []
    data = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    return list(data.get("tool", {}).get("cruft", {}).get("skip", []))


def cruft_state(answers: dict[str, object], source: str, commit: str, skip: list[str]) -> dict:
    """What `cruft create` would write: the answers (never a secret: those are made here, not
    asked), the template and its commit, and the skip list; no path of this machine."""
    context = {k: v for k, v in answers.items() if k not in MACHINE_KEYS}
    context.update(_template=source, _commit=commit)
    return {
        "template": source,
        "commit": commit,
        "checkout": answers.get("_checkout"),
        "context": {"cookiecutter": context},
        "directory": None,
        "skip": skip,
    }


def link_to_template(project: Path, answers: dict[str, object]) -> None:
    """Write .cruft.json (plain cookiecutter; cruft writes its own), or say why not."""
    link = template_link(answers)
    if isinstance(link, str):
        print(
            f"\nNot linked to the template for updates (no {CRUFT_FILE}): {link}. Render from "
            "a git checkout or URL, or link this project: cruft link <template URL>"
        )
        return
    state = cruft_state(answers, *link, cruft_skip(project))
    text = json.dumps(state, ensure_ascii=False, indent=2, separators=(",", ": "))
    (project / CRUFT_FILE).write_text(text + "\n", encoding="utf-8")


def project_files(project: Path, pattern: str) -> Iterator[Path]:
    """Files matching pattern anywhere in the project, skipping caches and virtualenvs."""
    for root, dirs, files in os.walk(project):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        yield from (Path(root) / name for name in files if Path(name).match(pattern))


def make_executable(path: Path) -> None:
    """Add x wherever r is set: cookiecutter does not keep modes across git and zip checkouts."""
    mode = path.stat().st_mode
    path.chmod(mode | ((mode & 0o444) >> 2))


def fix_scripts(project: Path) -> None:
    """Shell scripts run in Linux containers: LF endings (a CRLF checkout breaks them) and +x."""
    for script in project_files(project, "*.sh"):
        data = script.read_bytes()
        if b"\r\n" in data:
            script.write_bytes(data.replace(b"\r\n", b"\n"))
        make_executable(script)
    for script in (project / "deploy" / "local").glob("*.py"):
        make_executable(script)


def succeeds(argv: list[str]) -> bool:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def up_mode() -> str:
    """What `make up` will use here, by the Makefile's test: a Docker engine that answers
    (`docker info`) with compose, else the stack as local processes."""
    if succeeds(["docker", "info"]) and succeeds(["docker", "compose", "version"]):
        return "make up will use compose (a Docker engine answers `docker info`)"
    return (
        "make up will run the stack as local processes (no Docker engine with compose here); "
        "it needs PostgreSQL's server binaries (initdb, pg_ctl), psql and redis-server"
    )


def print_next_steps(project: Path, answers: dict[str, object]) -> None:
    base = f"http://localhost:{answers['api_host_port']}"
    print(
        f"\nCreated {project}\n\n{up_mode()}\n\nNext steps:\n"
        f"  cd {answers['app_code']} && make up\n"
        f"  API docs:  {base}/docs\n"
        f"  ReDoc:     {base}/redoc\n"
        f"  Status:    {base}/app/v1/status\n"
        "  make test\n"
        "  make down   (stops the stack and deletes its data)"
    )


def main() -> None:
    answers: dict[str, object] = json.loads(unquote(RENDERED_ANSWERS))
    project = Path.cwd()
    try:
        parse = load_cron_parser(cron_parser(project, str(answers["app_code"])))
    except HookError as exc:  # a broken template, not a bad answer
        print(exc, file=sys.stderr)
        sys.exit(1)
    problems = check_crons(answers, parse)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:  # cookiecutter then removes the project it created
        sys.exit(1)
    try:
        write_env(project)
    except HookError as exc:
        print(f"post_gen_project: {exc}", file=sys.stderr)
        sys.exit(1)
    fix_scripts(project)
    if "_commit" in answers:  # cruft renders: it writes .cruft.json, and diff and update
        return  # render into scratch folders, where next steps would mislead
    link_to_template(project, answers)
    print_next_steps(project, answers)


if __name__ == "__main__":
    main()
