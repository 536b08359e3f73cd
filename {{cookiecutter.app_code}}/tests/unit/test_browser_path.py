"""The browser tests find a browser as a user's machine has one (tests/browser/browser_path.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.browser_path import COMMANDS, BrowserNotFound, find_browser


def fake_executable(folder: Path, name: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("variable", ["CHROMIUM", "CHROME"])
def test_an_explicit_variable_wins(tmp_path: Path, variable: str) -> None:
    fake = fake_executable(tmp_path, "my-chrome")
    on_path = fake_executable(tmp_path, "chromium")
    env = {variable: str(fake), "PATH": str(on_path.parent)}
    assert find_browser(env) == str(fake)


def test_the_commands_on_path_in_order(tmp_path: Path) -> None:
    fake = fake_executable(tmp_path, "google-chrome")
    assert find_browser({"PATH": str(tmp_path)}) == str(fake)
    fake_executable(tmp_path, "chromium-browser")
    assert find_browser({"PATH": str(tmp_path)}) == str(tmp_path / "chromium-browser")


def test_nothing_found_names_what_was_tried(tmp_path: Path) -> None:
    with pytest.raises(BrowserNotFound) as missing:
        find_browser({"CHROME": str(tmp_path / "nope"), "PATH": str(tmp_path)})
    message = str(missing.value)
    assert f"CHROME={tmp_path / 'nope'}" in message and "CHROMIUM (not set)" in message
    assert all(command in message for command in COMMANDS)
