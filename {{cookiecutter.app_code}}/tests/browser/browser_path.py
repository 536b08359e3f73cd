"""Which Chromium-family browser the browser tests drive: the one a user's machine has.

An explicit `CHROMIUM` or `CHROME` environment variable (a path or a command name) wins; then
`chromium`, `chromium-browser`, `google-chrome` and `google-chrome-stable` on PATH. Nothing
found is an error naming what was tried: the tests never download a browser and never skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

VARIABLES = ("CHROMIUM", "CHROME")
COMMANDS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


class BrowserNotFound(Exception):
    """No browser: the message names every variable and command tried."""


def find_browser(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    tried = []
    for name in VARIABLES:
        value = env.get(name, "").strip()
        if value:
            found = shutil.which(value)
            if found:
                return found
            tried.append(f"{name}={value} (not an executable)")
        else:
            tried.append(f"{name} (not set)")
    path = env.get("PATH", os.defpath)
    for command in COMMANDS:
        found = shutil.which(command, path=path)
        if found:
            return found
        tried.append(f"{command} (not on PATH)")
    raise BrowserNotFound(
        "no Chromium or Chrome found; tried: "
        + ", ".join(tried)
        + ". Install one (Debian: `apt-get install -y chromium`) or set CHROMIUM or CHROME "
        "to its path; the browser tests never download a browser"
    )
