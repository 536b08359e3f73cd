"""Generation: every option set bakes a complete, clean, lint-free project."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from helpers import SECRET_KEYS, TEMPLATE, bake, read_env, run
from options import GOOD_OPTION_SETS, RENDER_OPTION_SETS

EXPECTED_FILES = [
    ".env",
    ".env.example",
    ".gitignore",
    ".dockerignore",
    "Makefile",
    "README.md",
    "compose.yml",
    "compose.override.yml",
    "pyproject.toml",
    "uv.lock",
    "deploy/api/Dockerfile",
    "deploy/worker/Dockerfile",
    "deploy/postgres/bootstrap.sql",
    "deploy/postgres/initdb.d/10-bootstrap.sh",
    "deploy/db-deploy/sql/V1__job_ledger.sql",
    "deploy/db-deploy/sql/V2__hello.sql",
    "deploy/local/stack.py",
    "src/{app}/__init__.py",
    "src/{app}/core/config.py",
    "src/{app}/api/main.py",
    "src/{app}/api/routes/jobs.py",
    "src/{app}/worker/settings.py",
    "src/{app}/jobs/hello.py",
    "src/{app}/db/helpers.py",
    "src/{app}/db/migrate/__main__.py",
    "src/{app}/queue/__init__.py",
    "tests/integration/test_pipeline.py",
]
UNRENDERED = re.compile(r"\{\{\s*cookiecutter\.|\{%[^%]*cookiecutter")
SKIP_DIRS = {
    ".venv",
    ".git",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "__pycache__",
}


def text_files(root: Path):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP_DIRS]
        for name in filenames:
            path = Path(dirpath, name)
            try:
                yield path, path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue


@pytest.mark.parametrize(
    ("context"), [c for _, c in GOOD_OPTION_SETS], ids=[i for i, _ in GOOD_OPTION_SETS]
)
def test_bake_is_complete_and_fully_rendered(cookies, context: dict[str, str]) -> None:
    project = bake(cookies, context)
    app = context.get("app_code", "aserv")
    assert project.name == app
    for rel in EXPECTED_FILES:
        assert (project / rel.format(app=app)).is_file(), f"missing {rel}"
    leftovers = [
        str(p.relative_to(project)) for p, text in text_files(project) if UNRENDERED.search(text)
    ]
    assert leftovers == [], f"unrendered cookiecutter syntax in {leftovers}"
    if app != "aserv":
        spelled = [
            str(p.relative_to(project)) for p, text in text_files(project) if "aserv" in text
        ]
        assert spelled == [], f"the default app code is hard-coded in {spelled}"
        assert not any("aserv" in str(p) for p in project.rglob("*"))


@pytest.mark.parametrize(
    "context", [c for _, c in GOOD_OPTION_SETS], ids=[i for i, _ in GOOD_OPTION_SETS]
)
def test_toml_and_yaml_parse(cookies, context: dict[str, str]) -> None:
    project = bake(cookies, context)
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    assert pyproject["project"]["name"] == context.get("app_code", "aserv")
    tomllib.loads((project / "uv.lock").read_text())
    for name in ("compose.yml", "compose.override.yml"):
        assert isinstance(yaml.safe_load((project / name).read_text()), dict)
    compose = yaml.safe_load((project / "compose.yml").read_text())
    app = context.get("app_code", "aserv")
    assert set(compose["services"]) == {
        f"{app}-{s}" for s in ("api", "worker", "postgres", "redis", "db-deploy")
    }
    assert compose["name"] == app


def test_env_is_git_ignored(cookies) -> None:
    project = bake(cookies, {})
    assert run(["git", "init", "-q"], project).returncode == 0
    ignored = run(["git", "check-ignore", ".env", ".local/x", ".venv/x"], project)
    assert ignored.returncode == 0, ignored.stderr
    assert ignored.stdout.split() == [".env", ".local/x", ".venv/x"]
    assert run(["git", "check-ignore", ".env.example"], project).returncode == 1


def test_shell_scripts_end_lines_with_lf(cookies) -> None:
    project = bake(cookies, {})
    for script in project.rglob("*.sh"):
        assert b"\r\n" not in script.read_bytes(), script
        assert os.access(script, os.X_OK), f"{script} is not executable"


@pytest.mark.parametrize(
    "context",
    [c for _, c in RENDER_OPTION_SETS],
    ids=[i for i, _ in RENDER_OPTION_SETS],
)
def test_rendered_project_passes_its_linters_and_unit_tests(
    cookies, context: dict[str, str], project_python: str
) -> None:
    project = bake(cookies, context)
    # `make lint` (ruff check, ruff format --check, strict mypy) and `make test-unit`, the
    # README's commands, with the shared interpreter.
    for target in ("lint", "test-unit"):
        argv = ["make", target, f"PYTHON={project_python}", "DOCKER="]
        done = run([*argv, "PYTEST_ARGS=-q -p no:cacheprovider"], project)
        assert done.returncode == 0, f"make {target} failed:\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize(
    "context",
    [c for _, c in RENDER_OPTION_SETS],
    ids=[i for i, _ in RENDER_OPTION_SETS],
)
def test_compose_file_matches_the_compose_specification(
    cookies, context: dict[str, str], tool
) -> None:
    project = bake(cookies, context)
    for name in ("compose.yml", "compose.override.yml"):
        done = run(
            [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", name],
            project,
        )
        assert done.returncode == 0, done.stdout + done.stderr


# .env variables that the compose stack does not hand to the API and worker containers, and why.
NOT_FOR_CONTAINERS = {
    "API_HOST": "the image's command binds 0.0.0.0 inside the container",
    "API_HOST_PORT": "published port, used by compose itself",
    "DB_HOST_PORT": "published port, used by compose itself",
    "REDIS_HOST_PORT": "published port, used by compose itself",
    "WORKER_METRICS_PORT": "the worker service's alone (its environment and expose)",
    "DB_SCHEMA": "derived from APP_CODE, as in .env",
    "DB_ADMIN_USER": "derived from APP_CODE, as in .env",
    "DB_DATA_USER": "derived from APP_CODE, as in .env",
    "DB_APP_USER": "derived from APP_CODE, as in .env",
    "DB_BOOTSTRAP_USER": "the postgres container's POSTGRES_USER: the bootstrap step's alone",
    # compose runs its own PostgreSQL and Redis, without TLS: managed servers are set in the
    # images' environment (README, "Point at a managed PostgreSQL / Redis").
    "DB_SSLMODE": "managed servers only",
    "DB_SSLROOTCERT": "managed servers only",
    "REDIS_SSL": "managed servers only",
    "REDIS_SSL_CA_CERTS": "managed servers only",
    "REDIS_SENTINELS": "managed servers only",
    "REDIS_SENTINEL_MASTER": "managed servers only",
}


def test_compose_hands_every_setting_to_the_api_and_worker(cookies) -> None:
    """A setting changed in .env reaches the containers, with .env.example's default."""
    project = bake(cookies, {})
    compose = yaml.safe_load((project / "compose.yml").read_text())
    app_env = compose["x-app-env"]
    example = read_env(project / ".env.example")
    for key, value in example.items():
        if key.startswith("FLYWAY_") or key in NOT_FOR_CONTAINERS or is_secret(key):
            continue  # secrets: test_compose_gives_each_service_only_its_own_secrets
        if key in IMAGE_VARIABLES:
            continue  # compose's own: test_every_image_comes_from_a_variable_with_the_example_...
        assert key in app_env, f"{key} in .env never reaches the containers (compose.yml)"
        passed = str(app_env[key])
        if passed.startswith("${") and ":-" in passed:  # ${KEY:-default}
            assert passed == f"${{{key}:-{value.strip(chr(34))}}}", f"{key}: {passed} vs {value}"
    for name in ("aserv-api", "aserv-worker"):
        env = compose["services"][name]["environment"]
        assert all(env.get(k) == v for k, v in app_env.items()), f"{name} lacks x-app-env"


def test_compose_keeps_secrets_out_and_ports_local(cookies) -> None:
    project = bake(cookies, {})
    compose = yaml.safe_load((project / "compose.yml").read_text())
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
        env = service.get("environment", {})
        for key, value in env.items():
            if any(word in key for word in ("PWD", "PASSWORD", "TOKEN", "AUTH")):
                assert str(value).startswith("${") and ":?" in str(value), f"{name}.{key}"
    secrets = read_env(project / ".env")
    text = (project / "compose.yml").read_text()
    for key in SECRET_KEYS:
        assert secrets[key] and secrets[key] not in text


# Which secrets each compose service gets: the rendered core/config.py's PROCESS_SECRETS for the
# API and the worker; the database's own container makes the roles (bootstrap), so it holds
# their passwords; Flyway migrates as the admin; Redis has its own password.
COMPOSE_SECRETS = {
    "aserv-api": {"DB_APP_PWD", "REDIS_PASSWORD", "API_TOKEN", "API_READ_TOKEN", "SESSION_SECRET"},
    "aserv-worker": {"DB_DATA_PWD", "REDIS_PASSWORD"},
    "aserv-postgres": {"DB_BOOTSTRAP_PWD", "DB_ADMIN_PWD", "DB_DATA_PWD", "DB_APP_PWD"},
    "aserv-db-deploy": {"DB_ADMIN_PWD"},
    "aserv-redis": {"REDIS_PASSWORD"},
}


def is_secret(key: str) -> bool:
    return any(word in key for word in ("PWD", "PASSWORD", "TOKEN", "SECRET", "AUTH"))


def test_compose_gives_each_service_only_its_own_secrets(cookies) -> None:
    """Least privilege: no service can read another's credentials from its environment."""
    project = bake(cookies, {})
    compose = yaml.safe_load((project / "compose.yml").read_text())
    config = (project / "src/aserv/core/config.py").read_text()
    for process, service in (("api", "aserv-api"), ("worker", "aserv-worker")):
        declared = re.search(rf'"{process}": \(([^)]*)\)', config)
        assert declared, f"PROCESS_SECRETS has no {process!r} entry"
        assert set(re.findall(r'"([A-Z_]+)"', declared[1])) == COMPOSE_SECRETS[service]
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        given = {
            re.sub(r"^\$\{([A-Z_]+)[:?}].*", r"\1", str(value))
            for key, value in env.items()
            if is_secret(key)
        }
        assert given == COMPOSE_SECRETS[name], f"{name} gets {sorted(given)}"


IMAGE_VARIABLES = ("PYTHON_IMAGE", "UV_IMAGE", "POSTGRES_IMAGE", "REDIS_IMAGE", "FLYWAY_IMAGE")


@pytest.mark.parametrize("python", ["3.12", "3.13"])
def test_every_image_comes_from_a_variable_with_the_example_default(cookies, python) -> None:
    """compose.yml's images and build args and the Dockerfiles' FROMs name no image but through
    PYTHON_IMAGE, UV_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE or FLYWAY_IMAGE, each defaulting to
    .env.example's value (a private registry or mirror needs only .env)."""
    project = bake(cookies, {"python_version": python})
    example = dict(
        line.split("=", 1)
        for line in (project / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert example["PYTHON_IMAGE"] == f"python:{python}-slim"
    defaults = {key: f"${{{key}:-{example[key]}}}" for key in IMAGE_VARIABLES}
    compose = yaml.safe_load((project / "compose.yml").read_text())
    used = set()
    for name, service in compose["services"].items():
        if "build" in service:
            args = service["build"]["args"]
            assert args == {k: defaults[k] for k in ("PYTHON_IMAGE", "UV_IMAGE")}, name
            assert service["image"] == f"{name}:local", name  # the image it builds
            used |= set(args)
        else:
            key = next(k for k, v in defaults.items() if v == service["image"])
            used.add(key)
    assert used == set(IMAGE_VARIABLES)
    for dockerfile in ("deploy/api/Dockerfile", "deploy/worker/Dockerfile"):
        text = (project / dockerfile).read_text()
        for key in ("PYTHON_IMAGE", "UV_IMAGE"):
            assert f"ARG {key}={example[key]}\n" in text, (dockerfile, key)
        froms = re.findall(r"^FROM (\S+)", text, re.M)
        assert froms == ["${UV_IMAGE}", "${PYTHON_IMAGE}", "${PYTHON_IMAGE}"], froms
        copies = re.findall(r"^COPY --from=(\S+)", text, re.M)
        assert set(copies) <= {"uv", "build"}, copies  # stages, never an image by name


@pytest.mark.parametrize("service", ["api", "worker"])
def test_dockerfiles_pass_hadolint(cookies, tool, service: str) -> None:
    project = bake(cookies, {})
    done = run([tool("hadolint"), f"deploy/{service}/Dockerfile"], project)
    assert done.returncode == 0, done.stdout + done.stderr


def test_lock_matches_pyproject_for_another_app_code(cookies, tool) -> None:
    project = bake(cookies, {"app_code": "billing42"})
    done = run(
        [tool("uv"), "lock", "--check", "--offline"],
        project,
        UV_PYTHON_DOWNLOADS="never",
    )
    if done.returncode != 0 and "offline" in done.stderr.lower():
        done = run([tool("uv"), "lock", "--check"], project, UV_PYTHON_DOWNLOADS="never")
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("where", ["template", "parent"])
def test_bakes_from_a_relative_template_path(tmp_path, monkeypatch, where: str) -> None:
    """`cookiecutter .` from a clone (the README's local command) must work like a full path."""
    from cookiecutter.main import cookiecutter

    monkeypatch.chdir(TEMPLATE if where == "template" else TEMPLATE.parent)
    relative = "." if where == "template" else TEMPLATE.name
    project = Path(cookiecutter(relative, no_input=True, output_dir=str(tmp_path)))
    assert (project / ".env").is_file()
