"""The native stack's Redis: a project-local redis-server, for deploy/local/stack.py."""

from __future__ import annotations

import shutil
import subprocess

import redis
from stack_postgres import runtime_dirs
from stack_processes import (
    LOGS,
    STATE,
    StackError,
    alive,
    command_line,
    port_open,
    private_dir,
    read_pidfile,
    say,
    wait_for,
    write_pidfile,
    write_private,
)

from {{ cookiecutter.app_code }}.core.config import Settings

HOME = STATE / "redis"
OWN_PIDFILE = HOME / "redis-server.pid"  # redis writes it; .local/run/redis.pid is the stack's


def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=settings.redis_port,
        password=settings.redis_password.get_secret_value(),
        socket_timeout=1,
        socket_connect_timeout=1,
    )


def redis_answers(settings: Settings) -> bool:
    try:
        return bool(redis_client(settings).ping())
    except redis.RedisError:
        return False


def config(settings: Settings) -> str:
    """redis.conf: the password in a 0600 file (write_private), never on a command line."""
    return (
        f"bind 127.0.0.1\nport {settings.redis_port}\nprotected-mode yes\n"
        f"requirepass {settings.redis_password.get_secret_value()}\n"
        f'dir {HOME}\nappendonly yes\nappendfsync everysec\nsave ""\n'
        f"daemonize yes\npidfile {OWN_PIDFILE}\nlogfile {LOGS / 'redis.log'}\n"
    )


def record_pid(settings: Settings) -> None:
    """`.local/run/redis.pid` with the identity of the server redis's own pid file names, once
    that is a redis-server on our port."""
    try:
        pid = int(OWN_PIDFILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    command = command_line(pid)
    if alive(pid) and "redis-server" in command and f":{settings.redis_port}" in command:
        write_pidfile("redis", pid)


def start_redis(settings: Settings) -> None:
    if redis_answers(settings):
        state = "running" if read_pidfile("redis") else "reusing the server"
        say(f"redis: {state} on 127.0.0.1:{settings.redis_port}")
        return
    if port_open(settings.redis_port):
        raise StackError(
            f"port {settings.redis_port} is taken by a server that refuses REDIS_PASSWORD: "
            "stop it, or set REDIS_HOST_PORT in .env to a free port"
        )
    runtime_dirs()
    private_dir(HOME)
    conf = write_private(HOME / "redis.conf", config(settings))
    server = shutil.which("redis-server")
    if not server:
        raise StackError(
            "redis-server not found: install Redis (e.g. apt-get install redis-server)"
        )
    say(f"redis: starting on 127.0.0.1:{settings.redis_port} (append-only)")
    subprocess.run([server, str(conf)], check=True, cwd=HOME)
    wait_for("redis", lambda: redis_answers(settings), 20, LOGS / "redis.log")
    record_pid(settings)
