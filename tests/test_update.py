"""Keeping a rendered project current: `cruft create`, `cruft check`, `cruft diff` and
`cruft update` (and `make update`) against a throwaway git repository of this template, and the
`.cruft.json` that plain cookiecutter writes. (test_stack.py runs the defaults project's whole
suite on a project updated this way.)"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import (
    PROJECT_TEMPLATE,
    SECRET_KEYS,
    commit_all,
    copy_template,
    cruft_project,
    git,
    read_env,
    run,
    template_repo,
)

README_LINE = "The answers used to render this project (no secrets) and the template commit"


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{path} has no {old!r}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def make_update(project: Path, python: str) -> object:
    return run(["make", "update", "CRUFT_ARGS=-y", f"PYTHON={python}", "DOCKER="], project)


def assert_no_secret_in(project: Path, name: str) -> None:
    env = read_env(project / ".env")
    text = (project / name).read_text(encoding="utf-8")
    assert all(env[key] and env[key] not in text for key in SECRET_KEYS)


def test_update_brings_the_templates_changes_and_keeps_the_projects(tmp_path, tool, project_python):
    template = template_repo(tmp_path / "template")
    project = cruft_project(template, tmp_path / "out", tool)
    env_before = (project / ".env").read_bytes()
    # A local change, committed; then the template changes that file elsewhere, and a file
    # the project did not change, and adds a setting.
    with (project / "README.md").open("a", encoding="utf-8") as readme:
        readme.write("\nOur own notes.\n")
    commit_all(project, "our notes")
    rendered = template / PROJECT_TEMPLATE
    edit(rendered / "README.md", "## Tests\n", "## Tests\n\nA template change.\n")
    edit(rendered / "Makefile", "SHELL := /bin/bash\n", "SHELL := /bin/bash\n# template change\n")
    with (rendered / ".env.example").open("a", encoding="utf-8") as example:
        example.write("NEW_SETTING=on\n")
    head = commit_all(template, "two")

    updated = run([tool("cruft"), "update", "-y"], project)

    assert updated.returncode == 0, updated.stdout + updated.stderr
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert "A template change." in readme and "Our own notes." in readme
    assert "# template change" in (project / "Makefile").read_text(encoding="utf-8")
    assert (project / ".env").read_bytes() == env_before
    state = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
    assert state["commit"] == head
    assert_no_secret_in(project, ".cruft.json")
    checked = run([tool("cruft"), "check"], project)
    assert checked.returncode == 0 and "up to date" in checked.stdout, checked.stdout

    # `make update` once more: nothing to merge, but .env lacks the new setting: it says so.
    commit_all(project, "the update")
    again = make_update(project, project_python)
    assert again.returncode != 0
    assert ".env lacks settings the template added: NEW_SETTING" in again.stderr, again.stderr
    assert (project / ".env").read_bytes() == env_before


@pytest.mark.parametrize("history", ["local-change-committed-alone", "edited-before-first-commit"])
def test_a_conflict_stops_make_update_with_what_to_do(tmp_path, tool, project_python, history):
    """The same line changed on both sides: in a git history that has the rendered file, git's
    3-way merge leaves conflict markers; without it, cruft writes README.md.rej. Either way
    `make update` exits non-zero naming the files, and the README says what to do."""
    template = template_repo(tmp_path / "template")
    project = cruft_project(template, tmp_path / "out", tool)
    if history == "edited-before-first-commit":  # a history without the rendered README
        shutil.rmtree(project / ".git")
        git(project, "init", "-q")
    edit(project / "README.md", README_LINE, "Our line.")
    commit_all(project, "our line")
    edit(template / PROJECT_TEMPLATE / "README.md", README_LINE, "The template's line.")
    commit_all(template, "two")

    done = make_update(project, project_python)

    assert done.returncode != 0
    assert "the update conflicts with your changes in: README.md" in done.stderr, done.stderr
    assert "Update from a newer template" in done.stderr
    if history == "edited-before-first-commit":
        assert "The template's line." in (project / "README.md.rej").read_text()
        assert "Our line." in (project / "README.md").read_text()
    else:
        assert re.search(r"^<<<<<<< ", (project / "README.md").read_text(), re.M)
    section = (project / "README.md").read_text().split("## Update from a newer template")[1]
    for words in (".rej", "<<<<<<<", "make update", "cruft check", "cruft diff"):
        assert words in section.split("\n## ")[0], words


def test_plain_cookiecutter_links_the_project_to_the_commit_it_rendered(
    tmp_path, tool, monkeypatch
):
    """`cookiecutter <git checkout>` writes the same .cruft.json cruft would: the template's
    absolute path (a relative one too, from the shell's folder), the commit, the answers
    without secrets, the skip list; `cruft check` and `cruft diff` then work on it."""
    template = template_repo(tmp_path / "template")
    head = git(template, "rev-parse", "HEAD")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PWD", str(tmp_path))
    cookiecutter = [tool("cookiecutter"), "--no-input", "-o", "out", "template"]
    done = run([*cookiecutter, "app_code=linked", "api_host_port=9123"], tmp_path)
    assert done.returncode == 0, done.stderr
    project = tmp_path / "out" / "linked"

    state = json.loads((project / ".cruft.json").read_text(encoding="utf-8"))
    assert (state["template"], state["commit"]) == (str(template), head)
    answers = state["context"]["cookiecutter"]
    assert answers["app_code"] == "linked" and answers["api_host_port"] == "9123"
    assert answers["_commit"] == head and answers["_template"] == str(template)
    assert not {"_repo_dir", "_output_dir"} & set(answers)  # this machine's paths
    assert {".env", ".venv", ".local"} <= set(state["skip"])
    assert_no_secret_in(project, ".cruft.json")
    git(project, "init", "-q")
    commit_all(project, "rendered")
    checked = run([tool("cruft"), "check"], project)
    assert checked.returncode == 0 and "up to date" in checked.stdout, checked.stdout
    diff = run([tool("cruft"), "diff", "--exit-code"], project)
    assert diff.returncode == 0 and diff.stdout.strip() == "", diff.stdout + diff.stderr


def test_a_template_that_is_no_git_checkout_renders_unlinked_and_says_so(tmp_path, tool):
    template = copy_template(tmp_path / "template")
    done = run([tool("cookiecutter"), "--no-input", "-o", "out", str(template)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "out" / "aserv" / ".cruft.json").exists()
    assert "is not a git checkout" in done.stdout and "cruft link" in done.stdout
