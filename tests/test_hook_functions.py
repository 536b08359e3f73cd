"""The generation hooks' functions, called directly (no render): both hooks read cookiecutter's
answers only in main(), so they import as modules."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from helpers import PROJECT_TEMPLATE, SECRET_KEYS, TEMPLATE, post_gen, pre_gen

EXAMPLE = (TEMPLATE / PROJECT_TEMPLATE / ".env.example").read_text(encoding="utf-8")
GOOD = {
    "app_code": "billing42",
    "project_name": "Billing",
    "description": "Bills.",
    "author": "Zoë",
    "api_host_port": "9000",
    "db_host_port": "9001",
    "redis_host_port": "9002",
    "key_ttl_hours": "4",
    "python_version": "3.12",
}


# --- pre_gen_project


def test_good_answers_have_no_problem():
    assert pre_gen.validate(GOOD) == []


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("Bad", "2-20 characters"),
        ("class", "Python keyword"),
        ("select", "PostgreSQL reserved word"),
        ("json", "shadow the Python module 'json'"),
    ],
)
def test_check_app_code_says_why(value, says):
    [problem] = pre_gen.check_app_code(value)
    assert problem.startswith(f"app_code: {value!r}") and says in problem


def test_check_text_names_each_bad_character():
    [problem] = pre_gen.check_text("author", 'a"b\\c\n')
    assert "'\\n', '\"', '\\\\'" in problem
    assert pre_gen.check_text("author", "  ") == [
        "author: must not be empty; give one line of text"
    ]


def test_check_ports_range_and_collisions():
    problems = pre_gen.check_ports({"a": "80", "b": "9000", "c": "9000"})
    assert problems == [
        "a: '80' is not allowed: use a whole number 1024-65535",
        "b and c: '9000' is given 2 times; give each service its own host port",
    ]


@pytest.mark.parametrize("value", ["0", "721", "1.5", "01", "x"])
def test_check_ttl_refuses(value):
    assert pre_gen.check_ttl(value) == [
        f"key_ttl_hours: {value!r} is not allowed: use whole hours 1-720 (30 days)"
    ]


def test_python_versions_are_cookiecutter_jsons_choices():
    context = json.loads((TEMPLATE / "cookiecutter.json").read_text(encoding="utf-8"))
    assert list(pre_gen.PYTHON_VERSIONS) == context["python_version"]
    assert pre_gen.check_python_version("3.9") == [
        "python_version: '3.9' is not offered: choose one of 3.12, 3.13, 3.11"
    ]


def test_hooks_read_their_answers_only_in_main():
    for hook in (pre_gen, post_gen):
        assert hook.RENDERED_ANSWERS == "{{ cookiecutter | jsonify | urlencode }}"


# --- post_gen_project: crons


def test_check_crons_uses_the_projects_parser():
    parse = post_gen.load_cron_parser(
        post_gen.cron_parser(TEMPLATE / PROJECT_TEMPLATE, PROJECT_TEMPLATE)
    )
    answers = {"hello_cron": "*/10 * * * * *", "cleanup_cron": "*/10 * * * *"}
    assert post_gen.check_crons(answers, parse) == [
        "cleanup_cron: expected 6 fields (second minute hour day month weekday), got 5 in "
        "'*/10 * * * *'"
    ]


def test_a_missing_cron_parser_is_a_template_error(tmp_path):
    with pytest.raises(post_gen.HookError, match="template: cannot load the cron parser"):
        post_gen.load_cron_parser(post_gen.cron_parser(tmp_path, "x"))


# --- post_gen_project: .env


def test_render_env_fills_every_secret_and_keeps_the_rest():
    env = post_gen.parse_env(post_gen.render_env(EXAMPLE, {}))
    example = post_gen.parse_env(EXAMPLE)
    assert sorted(env) == sorted(example)
    for key in SECRET_KEYS:
        assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", env[key]), key
    assert {k: v for k, v in env.items() if k not in SECRET_KEYS} == {
        k: v for k, v in example.items() if k not in SECRET_KEYS
    }


def test_render_env_keeps_previous_secrets_and_hand_added_keys():
    previous = {"API_TOKEN": "kept", "API_HOST_PORT": "1", "MINE": "42"}
    env = post_gen.parse_env(post_gen.render_env(EXAMPLE, previous))
    assert env["API_TOKEN"] == "kept"
    assert env["API_HOST_PORT"] != "1"  # a setting follows the new .env.example
    assert env["MINE"] == "42"


def test_render_env_refuses_a_secret_with_a_value_and_a_missing_secret():
    with pytest.raises(post_gen.HookError, match="sets API_TOKEN; leave it blank"):
        post_gen.render_env(EXAMPLE.replace("API_TOKEN=\n", "API_TOKEN=shared\n"), {})
    with pytest.raises(post_gen.HookError, match="has no API_TOKEN= line"):
        post_gen.render_env(EXAMPLE.replace("API_TOKEN=\n", ""), {})


def test_write_env_needs_the_example(tmp_path):
    with pytest.raises(post_gen.HookError, match=r"\.env\.example is missing"):
        post_gen.write_env(tmp_path)


def test_write_private_is_0600(tmp_path):
    post_gen.write_private(tmp_path / ".env", "A=1\n")
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    assert (tmp_path / ".env").read_text() == "A=1\n"


# --- post_gen_project: scripts and next steps


def test_fix_scripts_gives_lf_and_x(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "deploy" / "local").mkdir(parents=True)
    shell, local = tmp_path / "scripts" / "a.sh", tmp_path / "deploy" / "local" / "b.py"
    shell.write_bytes(b"#!/bin/sh\r\necho ok\r\n")
    local.write_text("print('ok')\n")
    for path in (shell, local):
        path.chmod(0o644)

    post_gen.fix_scripts(tmp_path)

    assert shell.read_bytes() == b"#!/bin/sh\necho ok\n"
    for path in (shell, local):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path


def fake_docker(folder: Path, info_ok: bool, compose_ok: bool) -> None:
    folder.mkdir()
    (folder / "docker").write_text(
        "#!/bin/sh\n"
        f'[ "$1" = info ] && exit {0 if info_ok else 1}\n'
        f'[ "$1 $2" = "compose version" ] && exit {0 if compose_ok else 1}\n'
        "exit 1\n"
    )
    (folder / "docker").chmod(0o755)


@pytest.mark.parametrize(
    ("info_ok", "compose_ok", "expected"),
    [
        (True, True, "make up will use compose"),
        (True, False, "make up will run the stack as local processes"),
        (False, True, "make up will run the stack as local processes"),
    ],
)
def test_up_mode_names_the_mode_make_up_will_use(
    monkeypatch, tmp_path, info_ok, compose_ok, expected
):
    fake_docker(tmp_path / "bin", info_ok, compose_ok)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    said = post_gen.up_mode()
    assert said.startswith(expected)
    if "local processes" in expected:
        assert "PostgreSQL's server binaries" in said and "redis-server" in said


def test_next_steps_name_the_commands(capsys, tmp_path):
    post_gen.print_next_steps(tmp_path, {"app_code": "billing42", "api_host_port": "9000"})
    out = capsys.readouterr().out
    for text in ("cd billing42 && make up", "http://localhost:9000/docs", "make test", "make down"):
        assert text in out


# --- post_gen_project: .cruft.json


def template_answers(repo_dir: str, **extra: object) -> dict[str, object]:
    context = json.loads((TEMPLATE / "cookiecutter.json").read_text(encoding="utf-8"))
    version = context["_template_version"]
    return {"app_code": "x", "_repo_dir": repo_dir, "_template_version": version, **extra}


def test_template_checkout_resolves_a_relative_path_from_the_shells_folder(monkeypatch):
    monkeypatch.setenv("PWD", str(TEMPLATE.parent))
    assert post_gen.template_checkout(template_answers(TEMPLATE.name)) == TEMPLATE
    monkeypatch.setenv("PWD", "/")  # not where this template is: no guess
    assert post_gen.template_checkout(template_answers(TEMPLATE.name)) is None
    other = template_answers(str(TEMPLATE), _template_version="0.0.0")  # another template
    assert post_gen.template_checkout(other) is None


def test_template_link_is_the_checkouts_head(tmp_path):
    link = post_gen.template_link(template_answers(str(TEMPLATE), _template=str(TEMPLATE)))
    head = post_gen.run_git(TEMPLATE, "rev-parse", "HEAD")
    assert link == (str(TEMPLATE), head) and re.fullmatch(r"[0-9a-f]{40}", str(head))
    (tmp_path / "cookiecutter.json").write_text((TEMPLATE / "cookiecutter.json").read_text())
    assert post_gen.template_link(template_answers(str(tmp_path))) == (
        f"{tmp_path} is not a git checkout"
    )


def test_cruft_state_has_the_answers_without_this_machines_paths():
    answers = {"app_code": "x", "_repo_dir": "/r", "_output_dir": "/o", "_template": "."}
    state = post_gen.cruft_state(answers, "/src", "abc", [".env"])
    assert state["template"] == "/src" and state["commit"] == "abc" and state["skip"] == [".env"]
    assert state["context"]["cookiecutter"] == {
        "app_code": "x",
        "_template": "/src",
        "_commit": "abc",
    }


def test_the_skip_list_keeps_the_machines_files_out_of_updates():
    skip = post_gen.cruft_skip(TEMPLATE / PROJECT_TEMPLATE)
    assert {".env", ".venv", ".local"} <= set(skip)
