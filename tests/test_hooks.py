"""The generation hooks, through cookiecutter: bad answers are refused with a clear message,
good ones bake, and the generated .env holds fresh, private secrets that never leak into logs
or the replay file. (Their functions one by one: test_hook_functions.py.)"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter
from helpers import PROJECT_TEMPLATE, SECRET_KEYS, TEMPLATE, copy_template, post_gen, read_env
from helpers import bake_result as bake
from options import BAD_INPUTS, GOOD_OPTION_SETS, MANY_PROBLEMS_INPUTS, NAMED_OPTION_SETS

CONTEXT = json.loads((TEMPLATE / "cookiecutter.json").read_text(encoding="utf-8"))
PROMPTS = [key for key in CONTEXT if not key.startswith("_")]
PROBLEM_LINE = re.compile(r"[a-z_]+(?: and [a-z_]+)*: ")


def ids(cases):
    return [case[0] for case in cases]


def secrets_of(project: Path) -> dict[str, str]:
    env = read_env(project / ".env")
    return {key: env[key] for key in SECRET_KEYS}


def project_dir(template: Path) -> Path:
    return template / PROJECT_TEMPLATE


# --- pre_gen_project: refusals


@pytest.mark.parametrize(("case_id", "context", "expected"), BAD_INPUTS, ids=ids(BAD_INPUTS))
def test_bad_input_is_refused_with_a_clear_message(cookies, capfd, case_id, context, expected):
    result = bake(cookies, context)

    assert result.exit_code != 0
    assert isinstance(result.exception, FailedHookException)
    err = capfd.readouterr().err
    for text in expected:
        assert text in err
    assert len([line for line in err.splitlines() if PROBLEM_LINE.match(line)]) == 1


@pytest.mark.parametrize(
    ("case_id", "context", "prefixes"),
    MANY_PROBLEMS_INPUTS,
    ids=ids(MANY_PROBLEMS_INPUTS),
)
def test_several_problems_give_one_line_each(cookies, capfd, case_id, context, prefixes):
    result = bake(cookies, context)

    assert isinstance(result.exception, FailedHookException)
    lines = [line for line in capfd.readouterr().err.splitlines() if PROBLEM_LINE.match(line)]
    assert [line.split(": ")[0] + ": " for line in lines] == list(prefixes)


def test_every_prompt_has_a_refused_input():
    """The hook validates every answer: each prompt appears in at least one bad input."""
    refused = {key for _, context, _ in BAD_INPUTS for key in context}
    refused.add("python_version")  # cookiecutter refuses it first; see the two tests below
    assert sorted(set(PROMPTS) - refused) == []


def test_unknown_python_version_is_refused_by_cookiecutter(cookies):
    result = bake(cookies, NAMED_OPTION_SETS["python-3.9"])

    assert isinstance(result.exception, ValueError)
    assert "3.9" in str(result.exception)


def test_unknown_python_version_from_replay_is_refused_by_the_hook(
    cookies, capfd, tmp_path, _cookiecutter_config_file
):
    """A replay file skips cookiecutter's choice check; the hook still refuses it."""
    assert bake(cookies, {}).exit_code == 0
    replay_dir = Path(str(_cookiecutter_config_file)).parent / "cookiecutter_replay"
    replay = json.loads((replay_dir / f"{TEMPLATE.name}.json").read_text(encoding="utf-8"))
    replay["cookiecutter"]["python_version"] = "3.9"
    replay_file = tmp_path / "bad.json"
    replay_file.write_text(json.dumps(replay), encoding="utf-8")
    capfd.readouterr()

    with pytest.raises(FailedHookException):
        cookiecutter(
            str(TEMPLATE),
            replay=str(replay_file),
            output_dir=str(tmp_path / "out"),
            config_file=str(_cookiecutter_config_file),
        )
    assert "python_version: '3.9' is not offered: choose one of 3.12, 3.13, 3.11" in (
        capfd.readouterr().err
    )


# --- good answers


@pytest.mark.parametrize(("case_id", "context"), GOOD_OPTION_SETS, ids=ids(GOOD_OPTION_SETS))
def test_good_input_bakes(cookies, capfd, case_id, context):
    result = bake(cookies, context)

    assert result.exit_code == 0, result.exception
    assert result.exception is None
    assert result.project_path.name == result.context["app_code"]
    assert capfd.readouterr().err == ""


def test_next_steps_are_printed(cookies, capfd):
    result = bake(cookies, NAMED_OPTION_SETS["next-steps"])

    out = capfd.readouterr().out
    assert result.exit_code == 0
    for text in (
        "cd billing42 && make up",
        "http://localhost:9000/docs",
        "http://localhost:9000/redoc",
        "http://localhost:9000/app/v1/status",
        "make test",
        "make down",
    ):
        assert text in out


# --- post_gen_project: .env


def test_env_is_private_and_complete(cookies):
    project = bake(cookies, {}).project_path
    env_file = project / ".env"
    example = read_env(project / ".env.example")
    env = read_env(env_file)

    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert sorted(env) == sorted(example)
    for key, value in example.items():
        if key not in SECRET_KEYS:
            assert env[key] == value, key


def test_env_secrets_are_fresh_url_safe_and_distinct(cookies):
    first = secrets_of(bake(cookies, {}).project_path)
    second = secrets_of(bake(cookies, {}).project_path)

    for value in first.values():
        assert re.fullmatch(r"[A-Za-z0-9_-]{32,}", value)
    assert len(set(first.values())) == len(SECRET_KEYS)
    assert set(first.values()).isdisjoint(second.values())


def test_secrets_stay_out_of_output_and_replay(cookies, capfd, _cookiecutter_config_file):
    result = bake(cookies, {})
    captured = capfd.readouterr()
    replay_dir = Path(str(_cookiecutter_config_file)).parent / "cookiecutter_replay"
    replay = (replay_dir / f"{TEMPLATE.name}.json").read_text(encoding="utf-8")

    for value in secrets_of(result.project_path).values():
        assert value not in captured.out
        assert value not in captured.err
        assert value not in replay
        assert value not in json.dumps(result.context)


def test_rerender_keeps_secrets_and_hand_added_keys(tmp_path, _cookiecutter_config_file):
    def render(context):
        return Path(
            cookiecutter(
                str(TEMPLATE),
                no_input=True,
                extra_context=context,
                output_dir=str(tmp_path),
                overwrite_if_exists=True,
                config_file=str(_cookiecutter_config_file),
            )
        )

    project = render({})
    before = secrets_of(project)
    with (project / ".env").open("a", encoding="utf-8") as env:
        env.write("MY_OWN_SETTING=42\n")

    render(NAMED_OPTION_SETS["rerender-new-port"])
    env = read_env(project / ".env")

    assert secrets_of(project) == before
    assert env["API_HOST_PORT"] == "9000"
    assert env["MY_OWN_SETTING"] == "42"
    assert stat.S_IMODE((project / ".env").stat().st_mode) == 0o600


def test_missing_env_example_fails_clearly(cookies, capfd, tmp_path):
    template = copy_template(tmp_path / "template")
    (project_dir(template) / ".env.example").unlink()

    result = bake(cookies, {}, template)

    assert isinstance(result.exception, FailedHookException)
    assert ".env.example is missing" in capfd.readouterr().err


def test_bad_crons_are_refused_after_rendering_and_the_project_removed(
    capfd, tmp_path, _cookiecutter_config_file
):
    """The post-generation hook checks the crons with the rendered project's own parser, one
    line each, and cookiecutter removes the project it had written."""
    with pytest.raises(FailedHookException):
        cookiecutter(
            str(TEMPLATE),
            no_input=True,
            extra_context=NAMED_OPTION_SETS["two-bad-crons"],
            output_dir=str(tmp_path),
            config_file=str(_cookiecutter_config_file),
        )
    lines = [line for line in capfd.readouterr().err.splitlines() if PROBLEM_LINE.match(line)]
    assert [line.split(": ")[0] for line in lines] == ["hello_cron", "cleanup_cron"]
    assert list(tmp_path.iterdir()) == []


def test_missing_cron_parser_is_reported_as_a_template_error(cookies, capfd, tmp_path):
    template = copy_template(tmp_path / "template")
    post_gen.cron_parser(project_dir(template), PROJECT_TEMPLATE).unlink()

    result = bake(cookies, {}, template)

    assert isinstance(result.exception, FailedHookException)
    assert "template: cannot load the cron parser" in capfd.readouterr().err
