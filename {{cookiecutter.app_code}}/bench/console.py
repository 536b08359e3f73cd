"""What the bench says while it runs: one-line messages and a progress line per phase."""

from __future__ import annotations

import sys
import time

PACKAGE = "{{ cookiecutter.app_code }}"
TTY = sys.stdout.isatty()


class BenchError(RuntimeError):
    """The bench cannot go on; the message says what to do."""


def say(message: str) -> None:
    print(f"[{PACKAGE} bench] {message}", flush=True)


class Progress:
    """One line that counts up in place on a terminal, a dot a second in a log."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total = label, total
        self.start = time.monotonic()
        self.dots = 0
        print(f"[{PACKAGE} bench] {label} ...", end="", flush=True)

    def update(self, done: int) -> None:
        elapsed = time.monotonic() - self.start
        if TTY:
            print(
                f"\r[{PACKAGE} bench] {self.label} ... {done}/{self.total} ({elapsed:4.1f} s)",
                end="",
                flush=True,
            )
        elif int(elapsed) > self.dots:
            self.dots = int(elapsed)
            print(".", end="", flush=True)

    def finish(self, summary: str) -> None:
        end = f"\r[{PACKAGE} bench] {self.label} ... " if TTY else " "
        print(f"{end}{summary}\033[K" if TTY else f"{end}{summary}", flush=True)
