"""What a 2026 project carries beyond code: CI, Dependabot, pre-commit, and a re-render path."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]


def bake(cookies, context: dict[str, str] | None = None) -> Path:
    result = cookies.bake(extra_context=context or {})
    assert result.exit_code == 0, result.exception
    return Path(result.project_path)


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False, timeout=300)


def make_targets(project: Path) -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (project / "Makefile").read_text(), re.M))


def test_rendered_workflow_is_valid_and_runs_the_make_targets(cookies, tool) -> None:
    project = bake(cookies, {"app_code": "billing42", "python_version": "3.13"})
    workflow = project / ".github" / "workflows" / "ci.yml"
    text = workflow.read_text()
    assert "{%" not in text and "raw" not in text
    assert "${{ github.ref }}" in text and "${{ job.services.redis.id }}" in text
    done = run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)],
        project,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    spec = yaml.safe_load(text)
    assert spec["permissions"] == {"contents": "read"}
    runs = [step["run"] for job in spec["jobs"].values() for step in job["steps"] if "run" in step]
    make_calls = {m for r in runs for m in re.findall(r"\bmake ([a-z-]+)", r)}
    assert {"lint", "test", "up"} <= make_calls
    assert make_calls <= make_targets(project), (
        "the workflow calls a make target that does not exist"
    )
    python = {
        s["with"]["python-version"]
        for j in spec["jobs"].values()
        for s in j["steps"]
        if "with" in s and "python-version" in s["with"]
    }
    assert python == {"3.13"}
    services = spec["jobs"]["test"]["services"]
    assert services["postgres"]["env"]["POSTGRES_USER"] == "billing42_admin"


def test_dependabot_covers_python_docker_and_actions(cookies, tool) -> None:
    project = bake(cookies)
    config = project / ".github" / "dependabot.yml"
    done = run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", str(config)], project
    )
    assert done.returncode == 0, done.stdout + done.stderr
    ecosystems = {u["package-ecosystem"] for u in yaml.safe_load(config.read_text())["updates"]}
    assert {"uv", "docker", "github-actions"} <= ecosystems


def test_pre_commit_checks_pass_offline_on_a_fresh_bake(cookies, tool, project_python: str) -> None:
    """pre-commit itself fetches its hook repositories; the same checks run here from packages."""
    project = bake(cookies)
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
    hook_ids = {h["id"] for repo in config["repos"] for h in repo["hooks"]}
    assert {
        "ruff-check",
        "ruff-format",
        "end-of-file-fixer",
        "trailing-whitespace",
        "check-yaml",
        "check-toml",
        "detect-private-key",
    } <= hook_ids
    assert run(["git", "init", "-q"], project).returncode == 0
    assert run(["git", "add", "-A"], project).returncode == 0
    files = run(["git", "ls-files"], project).stdout.split()
    assert ".env" not in files
    by_suffix = lambda *s: [f for f in files if f.endswith(s)]  # noqa: E731
    checks = {
        "end-of-file-fixer": [tool("end-of-file-fixer"), *files],
        "trailing-whitespace": [tool("trailing-whitespace-fixer"), *files],
        "check-yaml": [tool("check-yaml"), *by_suffix(".yml", ".yaml")],
        "check-toml": [tool("check-toml"), *by_suffix(".toml", ".lock")],
        "detect-private-key": [tool("detect-private-key"), *files],
        "ruff-check": [project_python, "-m", "ruff", "check", "."],
        "ruff-format": [project_python, "-m", "ruff", "format", "--check", "."],
    }
    for hook, argv in checks.items():
        done = run(argv, project)
        assert done.returncode == 0, f"{hook}: {done.stdout}{done.stderr}"
    assert run(["git", "diff", "--quiet"], project).returncode == 0, "a fixer changed a file"


def test_answers_are_recorded_without_secrets_and_replay_to_the_same_files(
    cookies, tmp_path
) -> None:
    context = {"app_code": "zeta", "api_host_port": "9100", "hello_cron": "0 */2 * * * *"}
    project = bake(cookies, context)
    answers = json.loads((project / ".cookiecutter.json").read_text())["cookiecutter"]
    assert {k: answers[k] for k in context} == context
    assert not any(k.startswith("_") for k in answers)
    secrets = [
        line.split("=", 1)[1]
        for line in (project / ".env").read_text().splitlines()
        if line.split("=", 1)[0]
        in {"DB_ADMIN_PWD", "DB_DATA_PWD", "DB_APP_PWD", "REDIS_PASSWORD", "API_TOKEN"}
    ]
    recorded = (project / ".cookiecutter.json").read_text()
    assert len(secrets) == 5 and not any(s in recorded for s in secrets)

    again = Path(
        cookiecutter(
            str(TEMPLATE), replay=str(project / ".cookiecutter.json"), output_dir=str(tmp_path)
        )
    )
    first = {p.relative_to(project) for p in project.rglob("*") if p.is_file()}
    second = {p.relative_to(again) for p in again.rglob("*") if p.is_file()}
    assert first == second
    for rel in sorted(first):
        if rel == Path(".env"):
            continue
        assert (project / rel).read_bytes() == (again / rel).read_bytes(), f"{rel} differs"
    env1 = (project / ".env").read_text().splitlines()
    env2 = (again / ".env").read_text().splitlines()
    differing = {a.split("=", 1)[0] for a, b in zip(env1, env2, strict=True) if a != b}
    assert differing == {"DB_ADMIN_PWD", "DB_DATA_PWD", "DB_APP_PWD", "REDIS_PASSWORD", "API_TOKEN"}


def test_template_ci_runs_the_readme_command(tool) -> None:
    workflow = TEMPLATE / ".github" / "workflows" / "ci.yml"
    done = run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(workflow)],
        TEMPLATE,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    readme = (TEMPLATE / "README.md").read_text()
    command = "python3 -m pip install nox uv && python3 -m nox"
    assert command in readme
    runs = [s.get("run", "") for s in yaml.safe_load(workflow.read_text())["jobs"]["nox"]["steps"]]
    assert command in runs
    assert "python3 -m nox" in (TEMPLATE / ".ci" / "run").read_text()


SECRETS = {"DB_ADMIN_PWD", "DB_DATA_PWD", "DB_APP_PWD", "REDIS_PASSWORD", "API_TOKEN"}


def test_readme_documents_every_variable_with_its_default(cookies) -> None:
    project = bake(cookies, {"app_code": "billing42", "key_ttl_hours": "2"})
    example = {}
    for line in (project / ".env.example").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            example[key] = value.strip('"')
    rows = {
        key: code or plain
        for key, code, plain in re.findall(
            r"^\| `([A-Z_]+)` \| (?:`([^`]*)`|(\(empty\))) \|",
            (project / "README.md").read_text(),
            re.M,
        )
    }
    assert set(example) <= set(rows), f"undocumented: {sorted(set(example) - set(rows))}"
    for key, value in example.items():
        expected = "generated" if key in SECRETS else value or "(empty)"
        assert rows[key] == expected, f"README says {key}={rows[key]!r}, .env.example {value!r}"
