"""The worker and the API under supervisord, for deploy/local/stack.py.

supervisord (PyPI `supervisor`) runs both programs for the native stack: a program that exits is
started again (at once if it had been up for `START_SECONDS`, otherwise after a back-off that
grows by a second a try), and a stopped one stays stopped until it is started again. It listens
on a unix socket only (no TCP port) in a 0700 folder; its config holds paths, never a secret:
the programs inherit supervisord's own environment, which `stack.py` builds from `.env`.

This module holds the config and the XML-RPC client; `stack.py` decides when to start and stop.
Run as a script, it is supervisord's event listener: it counts restarts in
`.local/run/restarts.json` (for `make status`) and keeps `.local/run/worker.pid` and `api.pid`
naming the running processes, for tools that read pid files (bench/run.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import shlex
import sys
import tempfile
import xmlrpc.client
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from supervisor import childutils
from supervisor.xmlrpc import Faults, SupervisorTransport

PROGRAMS = ("worker", "api")  # start order; supervisord stops them in the reverse order
START_SECONDS = 1  # up this long counts as started; an earlier exit backs off before a retry
START_RETRIES = 1000  # back-off tries before supervisord gives up (FATAL)
STOP_WAIT_SECONDS = 15  # SIGTERM, then SIGKILL after this: in-flight jobs go back to the queue
SOCKET_MAX = 100  # AF_UNIX paths hold 104 (macOS) to 108 (Linux) bytes
FAILED_STATES = ("FATAL", "EXITED", "STOPPED")
RPC_ERRORS = (OSError, xmlrpc.client.Error, http.client.HTTPException)
LISTENER = "events"
RESTARTS = "restarts.json"
RESTART_FROM = ("EXITED", "BACKOFF")
GONE_EVENTS = {f"PROCESS_STATE_{s}" for s in ("BACKOFF", "EXITED", "STOPPED", "FATAL")}


def socket_path(run: Path, root: Path, package: str) -> Path:
    """`run/supervisor.sock`, or a 0700 folder in the temp dir when that path is too long."""
    path = run / "supervisor.sock"
    if len(str(path)) <= SOCKET_MAX:
        return path
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"{package}-supervisor-{digest}" / "supervisor.sock"


def ini(value: object, expanded: int = 1) -> str:
    """A value as supervisord reads it: it expands `%(name)s` (a program's log file names
    twice), so each `%` is doubled per expansion; " ;" and " #" would start a comment."""
    text = str(value)
    if "\n" in text or "\r" in text or " ;" in text or " #" in text:
        raise ValueError(
            f"a line break, ' ;' or ' #' cannot go into supervisord's config: {text!r}"
        )
    return text.replace("%", "%" * 2**expanded)


def render_config(
    *,
    socket: Path,
    root: Path,
    logs: Path,
    pidfile: Path,
    identifier: str,
    programs: Mapping[str, list[str]],
) -> str:
    """supervisord's config: a unix socket, its log and pid file, one section a program."""
    lines = [
        "; Written by deploy/local/stack.py each time it starts supervisord: edits are lost.",
        "; Paths only: the programs inherit supervisord's environment (.env), never written here.",
        "[unix_http_server]",
        f"file = {ini(socket)}",
        "chmod = 0700",
        "",
        "[supervisord]",
        f"logfile = {ini(logs / 'supervisord.log')}",
        "logfile_maxbytes = 0",
        "loglevel = info",
        f"pidfile = {ini(pidfile)}",
        f"identifier = {ini(identifier)}",
        f"directory = {ini(root)}",
        f"childlogdir = {ini(logs)}",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl = unix://{ini(socket)}",
    ]
    listener = [sys.executable, str(Path(__file__).resolve()), LISTENER, str(pidfile.parent)]
    lines += [
        "",
        f"[eventlistener:{LISTENER}]",  # starts first, stops last
        f"command = {ini(shlex.join(listener))}",
        "events = PROCESS_STATE",
        "priority = 1",
        "autorestart = true",
        f"stderr_logfile = {ini(logs / f'supervisord-{LISTENER}.log', 2)}",
        "stderr_logfile_maxbytes = 0",
        "stderr_logfile_backups = 0",
    ]
    for priority, (name, argv) in enumerate(programs.items(), start=1):
        lines += [
            "",
            f"[program:{name}]",
            f"command = {ini(shlex.join(argv))}",
            f"directory = {ini(root)}",
            f"priority = {priority * 10}",
            "autostart = false",  # stack.py starts each one and waits until it is healthy
            "autorestart = true",
            f"startsecs = {START_SECONDS}",
            f"startretries = {START_RETRIES}",
            "stopsignal = TERM",
            f"stopwaitsecs = {STOP_WAIT_SECONDS}",
            "redirect_stderr = true",
            f"stdout_logfile = {ini(logs / f'{name}.log', 2)}",
            "stdout_logfile_maxbytes = 0",
            "stdout_logfile_backups = 0",
        ]
    return "\n".join(lines) + "\n"


def uptime(info: Mapping[str, Any]) -> str:
    """H:MM:SS a running program has been up, from getProcessInfo; "-" when it is not up."""
    if info.get("statename") != "RUNNING" or not info.get("start"):
        return "-"
    seconds = max(0, int(info["now"]) - int(info["start"]))
    return f"{seconds // 3600}:{seconds // 60 % 60:02}:{seconds % 60:02}"


class Supervisor:
    """supervisord's XML-RPC over its unix socket (what `supervisorctl` speaks)."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket

    def rpc(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://localhost", transport=transport).supervisor

    def answers(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return bool(self.rpc().getState()["statename"] == "RUNNING")
        except RPC_ERRORS:
            return False

    def pid(self) -> int | None:
        """supervisord's own pid (getPID), or None without an answer."""
        try:
            return int(self.rpc().getPID())
        except RPC_ERRORS:
            return None

    def info(self, name: str) -> dict[str, Any] | None:
        """getProcessInfo (statename, pid, start, now, spawnerr, ...), or None without an
        answer."""
        if not self.socket.exists():
            return None
        try:
            return dict(self.rpc().getProcessInfo(name))
        except RPC_ERRORS:
            return None

    def start(self, name: str) -> None:
        """Ask for a start and return at once (the caller waits for health)."""
        try:
            self.rpc().startProcess(name, False)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != Faults.ALREADY_STARTED:
                raise

    def stop(self, name: str) -> None:
        """SIGTERM, SIGKILL after STOP_WAIT_SECONDS; returns once it has exited. It stays
        stopped until `start`."""
        try:
            self.rpc().stopProcess(name, True)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode != Faults.NOT_RUNNING:
                raise

    def shutdown(self) -> None:
        """Stop every program, then supervisord itself (asynchronously)."""
        with contextlib.suppress(*RPC_ERRORS):  # it may close the connection as it goes
            self.rpc().shutdown()


def on_event(run: Path, eventname: str, fields: Mapping[str, str]) -> None:
    """Keep `run/<program>.pid` (there while the program runs) and `run/restarts.json`.

    A restart is supervisord starting a program again by itself: a STARTING that follows an
    exit (EXITED) or a failed start (BACKOFF); one from STOPPED or FATAL was asked for.
    """
    name = fields.get("processname", "")
    if name not in PROGRAMS:
        return
    path = run / f"{name}.pid"
    if eventname == "PROCESS_STATE_RUNNING" and fields.get("pid"):
        path.write_text(f"{fields['pid']}\n")
    elif eventname in GONE_EVENTS:
        path.unlink(missing_ok=True)
    elif eventname == "PROCESS_STATE_STARTING" and fields.get("from_state") in RESTART_FROM:
        counts = read_restarts(run)
        counts[name] = counts.get(name, 0) + 1
        temporary = run / f"{RESTARTS}.tmp"
        temporary.write_text(json.dumps(counts) + "\n")
        temporary.replace(run / RESTARTS)


def read_restarts(run: Path) -> dict[str, int]:
    """Restarts a program since supervisord started (stack.py deletes the file then)."""
    try:
        counts = json.loads((run / RESTARTS).read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in counts.items()} if isinstance(counts, dict) else {}


def listen(run: Path) -> None:
    """supervisord's event listener protocol: wait for an event, act on it, say OK."""
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        try:
            fields, _ = childutils.eventdata(payload + "\n")
            on_event(run, headers["eventname"], fields)
        except (OSError, ValueError, KeyError) as exc:
            print(f"{LISTENER}: {headers.get('eventname')}: {exc!r}", file=sys.stderr, flush=True)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != LISTENER:
        raise SystemExit(f"usage: {sys.argv[0]} {LISTENER} RUN_DIR (supervisord runs it)")
    listen(Path(sys.argv[2]))
