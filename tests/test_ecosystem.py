"""What a 2026 project carries beyond code: CI, Dependabot, pre-commit, and a re-render path."""

from __future__ import annotations

import itertools
import json
import re
import shlex
from pathlib import Path

import yaml
from helpers import SECRET_KEYS, TEMPLATE, bake, clean_env, read_env, run, shell

SECRETS = set(SECRET_KEYS)  # what the generation hook writes into .env, fresh each render


def make_targets(project: Path) -> set[str]:
    return set(re.findall(r"^([a-z][a-z0-9-]*):", (project / "Makefile").read_text(), re.M))


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
    assert {"lint", "test", "up", "test-reliability"} <= make_calls
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
    # The CI server's superuser is the bootstrap user, not the admin role (no superuser).
    assert services["postgres"]["env"]["POSTGRES_USER"] == "postgres"
    # The reliability suite restarts the servers itself: it gets the native stack's own (make up
    # starts them on the ports of .env.example), not service containers.
    reliability = spec["jobs"]["reliability"]
    assert "services" not in reliability
    steps = [s.get("run", "") for s in reliability["steps"]]
    assert steps.index("make up DOCKER=") < steps.index("make test-reliability DOCKER=")
    example = dict(
        line.split("=", 1)
        for line in (project / ".env.example").read_text().splitlines()
        if line.startswith(("DB_HOST_PORT=", "REDIS_HOST_PORT="))
    )
    assert {k: reliability["env"][k] for k in example} == example


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
    # The quick start's render, without pipx: the same install, then cookiecutter on the clone.
    quick = "python3 -m pip install cookiecutter && python3 -m cookiecutter"
    assert f"{quick} gh:<owner>/async-service" in readme and "`python3 -m cookiecutter .`" in readme
    assert any(r.startswith(f"{quick} --no-input . ") for r in runs), runs
    assert "python3 -m nox" in (TEMPLATE / ".ci" / "run").read_text()


def test_readme_documents_every_variable_with_its_default(cookies) -> None:
    project = bake(cookies, {"app_code": "billing42", "key_ttl_hours": "2"})
    example = {key: value.strip('"') for key, value in read_env(project / ".env.example").items()}
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


# --- Every command in the rendered README is run by a test, or checked where it cannot run ---

SHELL_FENCES = {"shell"}
# a diagram; settings (loaded by the test below); Prometheus's scrape config and a log line
# (parsed by test_readme_yaml_and_json_blocks_parse); the layout (test_readme_layout_is_the_tree)
OTHER_FENCES = {"mermaid", "dotenv", "yaml", "json", "text"}
COMMAND_WORDS = {"make", "docker", "python", "python3", "pipx", "uv", "curl", "diff", "psql"}
# make targets the README names -> the template test file that runs `make <target>`.
MAKE_RUN_BY = {
    "help": "tests/test_ecosystem.py",  # `make` alone: run below
    "up": "tests/test_stack.py",
    "status": "tests/test_stack.py",
    "test": "tests/test_stack.py",
    "test-reliability": "tests/test_stack.py",
    "down": "tests/test_stack.py",
    "lint": "tests/test_generation.py",
    "test-unit": "tests/test_generation.py",
    "bootstrap": "tests/test_managed_services.py",
    "update": "tests/test_update.py",
    "migrate": "tests/test_managed_services.py",
    "logs": "tests/test_managed_services.py",
    # The rendered project's own smoke test runs `make bench` (test_stack.py runs that suite).
    "bench": "{{cookiecutter.app_code}}/tests/integration/test_bench_smoke.py",
    "k8s-secrets": "tests/test_k8s.py",
}
# What `docker compose up` accepts among its flags (docker compose v2).
COMPOSE_UP_FLAGS = {"-d", "--detach", "--force-recreate", "--build", "--wait", "--no-deps"}


def readme_commands(text: str) -> list[str]:
    """Each line of every shell block (continuations joined, comments dropped), and each inline
    code span of the prose that starts with a command (after any VAR=value words)."""
    commands = []
    for fence, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        assert fence in SHELL_FENCES | OTHER_FENCES, (
            f"a ```{fence} block in the README: say in this test how it is checked"
        )
        if fence in SHELL_FENCES:
            for line in body.replace("\\\n", " ").splitlines():
                command = re.sub(r"\s+# .*$", "", line).strip()
                if command and not command.startswith("#"):
                    commands.append(command)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    for span in re.findall(r"`([^`\n]+)`", prose):
        words = span.split()
        while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
            words.pop(0)
        script = len(words) > 1 and words[0].endswith(".py")  # a path alone is no command
        if words and (Path(words[0]).name in COMMAND_WORDS or script):
            commands.append(span)
    return commands


def check_compose_up(project: Path, command: str) -> None:
    """No Docker engine or compose plugin here: check the services and flags against
    compose.yml and `docker compose up`'s options instead of running it (build, pause and
    unpause: the services)."""
    services = yaml.safe_load((project / "compose.yml").read_text())["services"]
    argv = shlex.split(command)
    if argv[:2] == ["docker", "compose"] and argv[2:3] in (["pause"], ["unpause"], ["build"]):
        assert all(arg in services for arg in argv[3:]), f"{command}: no such service"
        return
    assert argv[:3] == ["docker", "compose", "up"], (
        f"{command}: only up, build and (un)pause are checked"
    )
    rest = iter(argv[3:])
    for arg in rest:
        if arg == "--scale":
            service, _, count = next(rest).partition("=")
            assert service in services and count.isdigit(), f"{command}: --scale {service}"
            assert "container_name" not in services[service], (
                f"{command}: compose cannot scale {service}, which has a fixed container_name"
            )
        elif arg.startswith("-"):
            assert arg in COMPOSE_UP_FLAGS, f"{command}: `docker compose up` has no {arg}"
        else:
            assert arg in services, f"{command}: compose.yml has no service {arg}"


def _no_vars(command: str) -> str:
    """`make bench BENCH_ARGS="--soak 100000"` -> `make bench`: variables passed to make."""
    return re.sub(r' [A-Z_]+=("[^"]*"|\S+)', "", command)


def run_secret_command(readme: str, sh) -> set[str]:
    """The README's command for a new secret's value prints a fresh URL-safe token."""
    [command] = re.findall(r"`(python3 -c 'import secrets; [^`]*)`", readme)
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}\n", sh(command).stdout)
    return {command}


def run_make_help_and_venv(sh) -> set[str]:
    """`make` alone lists the targets; the .venv rule (`uv sync --frozen`) builds a venv."""
    listed = sh("make DOCKER=").stdout
    assert all(f"make {t} " in listed for t in MAKE_RUN_BY if t != "help"), listed
    sh("make .venv/bin/python", UV_OFFLINE="1", UV_PYTHON_DOWNLOADS="never")
    sh(".venv/bin/python -c 'import fastapi, arq, psycopg_pool, billing42'")
    return {"make", "uv sync --frozen"}


def check_make_only(project: Path, command: str) -> None:
    """Each target of `make a && make b` exists and a template test runs it."""
    for part in _no_vars(command).split("&&"):
        words = part.split()
        target = words[1] if len(words) > 1 else "help"
        assert target in make_targets(project), f"{command}: no make target {target}"
        assert target in MAKE_RUN_BY, f"{command}: no test runs make {target}"
        runner = (TEMPLATE / MAKE_RUN_BY[target]).read_text()
        assert re.search(rf'"(make )?{target}"', runner) or target == "help", (
            f"{MAKE_RUN_BY[target]} does not run make {target}"
        )


def check_kubectl(project: Path, command: str) -> None:
    """No cluster can run here: the verb is kubectl's, and every object (kind/name), label and
    path the command names is in the manifests under deploy/k8s."""
    manifests = "\n".join(p.read_text() for p in (project / "deploy" / "k8s").rglob("*.yaml"))
    argv = shlex.split(command.replace("$", ""))
    assert argv[1] in {"apply", "rollout", "exec", "wait", "get", "scale", "delete", "logs"}, (
        f"{command}: not a kubectl verb this test knows"
    )
    for kind, name in re.findall(r"\b(statefulset|deployment|job)/([\w-]+)", command):
        kinds = {"statefulset": "StatefulSet", "deployment": "Deployment", "job": "Job"}
        assert re.search(rf"kind: {kinds[kind]}\n(?:.*\n)*?  name: {name}\n", manifests), (
            f"{command}: no {kinds[kind]} {name} in deploy/k8s"
        )
    for flag, value in itertools.pairwise(argv):
        if flag == "-l":
            key = re.split(r"!?=", value)[0]
            assert f"{key}:" in manifests, f"{command}: no object has the label {key}"
    for path in re.findall(r" (/[\w./-]+)", command):
        assert Path(path).parent.as_posix() in manifests, f"{command}: {path} is mounted nowhere"


def how_checked(command: str, project: Path, app: str, tool) -> str:
    """How a README command not run by test_every_readme_command_is_run_by_a_test is run or
    checked elsewhere; "" when nothing does."""
    makefile = (project / "Makefile").read_text()
    if re.fullmatch(r"make( [a-z0-9-]+)?( && make( [a-z0-9-]+)?)*", _no_vars(command)):
        check_make_only(project, command)
        return "make targets run by tests"
    if command.startswith("docker compose "):
        check_compose_up(project, command)
        return "checked against compose.yml (no Docker engine)"
    if command.startswith("kubectl "):
        check_kubectl(project, command)
        return "checked against deploy/k8s (no cluster here); test_k8s.py checks the rollout order"
    if command == "docker info":
        assert "docker info" in makefile  # every make call runs it to choose compose or not
        return "run by every make call"
    if command.startswith(("TOKEN=", "READ_TOKEN=", "curl ")):
        stack_test = (TEMPLATE / "tests" / "test_stack.py").read_text()
        assert 'readme_block(project, "TOKEN=")' in stack_test
        return "pasted by test_stack.py against the live stack"
    if command in ("make bootstrap", "make down && make up") or " -m arq " in command:
        return "pasted by test_managed_services.py"
    if command == f"python -m {app}.db.migrate":
        stack_py = (project / "deploy" / "local" / "stack.py").read_text()
        assert '"-m", f"{PACKAGE}.db.migrate"' in stack_py  # what `make migrate` runs
        return "run by make migrate"
    if command in ("cruft check", "cruft diff"):
        update_test = (TEMPLATE / "tests" / "test_update.py").read_text()
        assert f'tool("cruft"), "{command.split()[1]}"' in update_test
        return "run by test_update.py on a cruft-linked project"
    if command == "uv lock":
        generation_test = (TEMPLATE / "tests" / "test_generation.py").read_text()
        assert '"lock", "--check"' in generation_test  # the lock pyproject.toml asks for
        return "the lock it writes is checked by test_generation.py (it needs PyPI)"
    if command == "deploy/local/stack.py up":
        assert "deploy/local/stack.py up" in makefile
        return "run by make up"
    return ""


def test_every_readme_command_is_run_by_a_test(cookies, tool) -> None:
    app = "billing42"
    project = bake(cookies, {"app_code": app})
    readme = (project / "README.md").read_text()
    # Not nox's environment: its VIRTUAL_ENV and UV_PROJECT_ENVIRONMENT would make `uv sync`
    # install into the shared test interpreter instead of the project's .venv.
    sh = shell(project, clean_env())
    ran = run_secret_command(readme, sh) | run_make_help_and_venv(sh)

    how = {
        command: "run here" if command in ran else how_checked(command, project, app, tool)
        for command in readme_commands(readme)
    }
    unchecked = [c for c, h in how.items() if not h]
    assert unchecked == [], f"README commands no test runs or checks: {unchecked}"
    managed_test = (TEMPLATE / "tests" / "test_managed_services.py").read_text()
    assert 'readme_block(project, "-m arq")' in managed_test
    assert 'readme_block(project, "make bootstrap")' in managed_test
    for expected in (
        f"docker compose up -d --scale {app}-worker=3",
        f"PYTHONPATH=src .venv/bin/python -m arq {app}.worker.main.WorkerSettings &",
        f"docker compose up -d --force-recreate {app}-redis {app}-api {app}-worker",
        "make down && make up",
    ):
        assert expected in how, f"the README lost {expected!r}"


def test_readme_yaml_and_json_blocks_parse(cookies) -> None:
    """The sample Prometheus config scrapes the API with the read token and the worker on its
    port; the sample log line is one JSON object with the trace fields."""
    project = bake(cookies, {"app_code": "billing42", "api_host_port": "8100"})
    readme = (project / "README.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.S)]
    (config,) = [b for b in blocks if isinstance(b, dict) and "scrape_configs" in b]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["billing42-api"]["authorization"]["type"] == "Bearer"
    assert jobs["billing42-api"]["static_configs"][0]["targets"] == ["127.0.0.1:8100"]
    assert jobs["billing42-worker"]["static_configs"][0]["targets"] == ["127.0.0.1:8103"]
    env = dict(
        line.split("=", 1)
        for line in (project / ".env.example").read_text().splitlines()
        if line.startswith("WORKER_METRICS_PORT=")
    )
    assert env == {"WORKER_METRICS_PORT": "8103"}
    (line,) = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", readme, re.S)]
    assert {"time", "level", "logger", "message", "trace_id", "span_id", "job_id"} <= set(line)


def test_readme_layout_is_the_tree(cookies) -> None:
    """Every folder and file the README's layout tree names exists where the tree puts it."""
    project = bake(cookies, {"app_code": "billing42"})
    readme = (project / "README.md").read_text()
    (tree,) = re.findall(r"```text\n(.*?)```", readme, re.S)
    parents: list[str] = []  # the folder at each depth
    named = 0
    for line in tree.splitlines():
        match = re.match(r"^([│ ├└─]*)([\w./]+(?:/|\.py))(?:,|\s|$)", line)
        if not match:
            continue  # a description's second line
        depth = len(match.group(1)) // 4
        name = match.group(2)
        parents[depth:] = [name]
        path = project.joinpath(*parents)
        assert path.exists(), f"the README's layout names {'/'.join(parents)}, which is not there"
        named += 1
        # files listed after a folder's own entry ("deps.py, schemas.py, …") live in that folder
        for extra in re.findall(r"([\w]+\.py)(?:,|$)", line[match.end() :].split("  ")[0]):
            assert (path.parent / extra).exists(), f"the layout names {extra} beside {name}"
    assert named >= 10, "the README's layout tree lists fewer entries than expected"


def test_readme_settings_blocks_load(cookies, project_python: str, tmp_path) -> None:
    """The README's managed PostgreSQL / Redis lines are settings the project accepts."""
    project = bake(cookies, {"app_code": "billing42"})
    readme = (project / "README.md").read_text()
    blocks = re.findall(r"```dotenv\n(.*?)```", readme, re.S)
    assert len(blocks) == 3, "the README's managed PostgreSQL / Redis settings changed"
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, re.M))
    for block in blocks:
        env = dict(line.split("=", 1) for line in block.splitlines() if line.strip())
        assert set(env) <= documented, f"not in the README's table: {set(env) - documented}"
        for key, value in env.items():  # CA files: real files in a scratch folder
            if key.endswith(("ROOTCERT", "CA_CERTS")):
                env[key] = str(tmp_path / Path(value).name)
                Path(env[key]).write_text("PEM\n")
        load = "from billing42.core.config import load_settings as s; s()"
        done = run([project_python, "-c", load], project, PYTHONPATH="src", **env)
        assert done.returncode == 0, f"{block}\n{done.stderr}"


def test_template_readme_has_prompts_tree_quick_start_contributing_changelog(cookies) -> None:
    readme = (TEMPLATE / "README.md").read_text()
    context = json.loads((TEMPLATE / "cookiecutter.json").read_text())
    prompts = set(re.findall(r"^\| `([a-z_]+)` \|", readme, re.M))
    assert prompts == {k for k in context if not k.startswith("_")}
    # Plain pip first (a fresh machine has no pipx), pipx as the alternative.
    pip_form = readme.index("python3 -m pip install cookiecutter && python3 -m cookiecutter gh:")
    assert pip_form < readme.index("pipx run cookiecutter gh:")
    assert "python3 -m pip install nox uv && python3 -m nox" in readme
    for heading in ("## Prompts", "## What is generated", "## Contributing", "## Changelog"):
        assert f"\n{heading}\n" in readme, f"the README has no {heading}"
    # _template_version is the changelog's newest entry.
    changelog = readme.split("\n## Changelog\n")[1]
    newest = re.search(r"^### (\S+)$", changelog, re.M)
    assert newest is not None and newest[1] == context["_template_version"]

    # The sample tree's top-level entries are what a default render holds.
    project = bake(cookies)
    tree = re.search(r"```\naserv/\n(.*?)```", readme, re.S)
    assert tree is not None
    entries = re.findall(r"^[├└]── ([^\s,]+(?:, [^\s,]+)*)", tree[1], re.M)
    assert len(entries) >= 10
    for entry in entries:
        for name in entry.split(", "):
            assert (project / name).exists(), f"the README's tree shows {name}; a render has not"


def test_no_workflow_installs_chromium_with_apt_on_ubuntu(cookies) -> None:
    """Ubuntu's apt `chromium` is a snap shim that fails on GitHub runners: both workflows use
    the runner's Google Chrome (CHROME), which the browser tests look up first."""
    project = bake(cookies)
    for workflow in (
        TEMPLATE / ".github" / "workflows" / "ci.yml",
        project / ".github" / "workflows" / "ci.yml",
    ):
        spec = yaml.safe_load(workflow.read_text())
        browser_set = False
        for name, job in spec["jobs"].items():
            if not str(job.get("runs-on", "")).startswith("ubuntu"):
                continue
            for step in job["steps"]:
                for line in step.get("run", "").splitlines():
                    if "apt-get install" in line or "apt install" in line:
                        assert "chromium" not in line.split(), f"{workflow}: {name}: {line}"
                env = {**spec.get("env", {}), **job.get("env", {}), **step.get("env", {})}
                if "make test " in step.get("run", "") + " " or "nox" in step.get("run", ""):
                    browser_set |= env.get("CHROME") == "/usr/bin/google-chrome"
        assert browser_set, f"{workflow}: the browser tests are not pointed at the runner's Chrome"
