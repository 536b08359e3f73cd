"""Managed-looking servers for test_managed_services.py, started here: PostgreSQL that accepts
only TLS, Redis that speaks only TLS, and Redis behind a real Sentinel, with certificates from a
throwaway CA made with openssl. Needs initdb/pg_ctl, redis-server and openssl; a missing one
fails the tests."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import read_env

MASTER = "mymaster"


def need(name: str) -> str:
    found = shutil.which(name)
    if found is None and name in ("initdb", "pg_ctl"):
        versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
        found = str(versions[-1]) if versions else None
    if found is None:
        pytest.fail(f"{name} is not installed: .ci/run installs it (apt-get)", pytrace=False)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, log: Path, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"nothing listens on {port} after {within:.0f} s:\n{log.read_text()[-2000:]}")


def private(path: Path, text: str) -> Path:
    """A 0600 file: server configs hold passwords, which never go on a command line."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


@dataclass
class Servers:
    project: Path
    env: dict[str, str]  # the bake's .env
    ca: Path
    other_ca: Path
    pg_port: int
    tls_redis_port: int
    master_port: int
    sentinel_port: int
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)


def certificates(root: Path) -> tuple[Path, Path, Path, Path]:
    """A CA, a server certificate it signed for localhost and 127.0.0.1, and another CA."""
    openssl = need("openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = ["-addext", "basicConstraints=critical,CA:TRUE"]
    ca_ext += ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    for name in ("ca", "other-ca"):
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-new",
                *ec,
                "-keyout",
                f"{name}.key",
                "-out",
                f"{name}.pem",
                "-days",
                "2",
                "-subj",
                f"/CN={name}",
                *ca_ext,
            ],
            cwd=root,
            check=True,
            capture_output=True,
        )
    (root / "server.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    for argv in (
        [
            "req",
            "-new",
            *ec,
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
        [
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    ):
        subprocess.run([openssl, *argv], cwd=root, check=True, capture_output=True)
    return root / "ca.pem", root / "other-ca.pem", root / "server.pem", root / "server.key"


def start_tls_postgres(root: Path, env: dict[str, str], cert: Path, key: Path) -> int:
    """initdb with the bake's bootstrap superuser and password (the provider's master user);
    TLS only (hostssl), scram passwords."""
    initdb, pg_ctl = need("initdb"), need("pg_ctl")
    owner: dict[str, Any] = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        user = pwd.getpwnam("postgres")
        owner = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
    home = root / "pg"
    home.mkdir(mode=0o700)
    pwfile = private(home / "pwfile", env["DB_BOOTSTRAP_PWD"] + "\n")
    for path in (cert, key):
        shutil.copy(path, home / path.name)
    if owner:
        for path in (home, pwfile, home / cert.name, home / key.name):
            os.chown(path, owner["user"], owner["group"])
    subprocess.run(
        [
            initdb,
            "-D",
            str(home / "data"),
            "-U",
            env["DB_BOOTSTRAP_USER"],
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-instructions",
        ],
        cwd=home,
        check=True,
        capture_output=True,
        **owner,
    )
    (home / "data" / "pg_hba.conf").write_text(
        "local all all scram-sha-256\n"
        "hostssl all all 127.0.0.1/32 scram-sha-256\n"
        "hostssl all all ::1/128 scram-sha-256\n"
    )
    port = free_port()
    options = (
        f"-p {port} -c listen_addresses=127.0.0.1 -k {home} -c ssl=on "
        f"-c ssl_cert_file={home / cert.name} -c ssl_key_file={home / key.name}"
    )
    started = subprocess.run(
        [pg_ctl, "-D", str(home / "data"), "-l", str(home / "log"), "-o", options, "-w", "start"],
        cwd=home,
        capture_output=True,
        text=True,
        **owner,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    return port


def start_redis(servers: Servers, root: Path, name: str, conf: str, *args: str) -> None:
    home = root / name
    home.mkdir()
    config = private(home / "redis.conf", f'{conf}dir {home}\nlogfile {home / "log"}\nsave ""\n')
    proc = subprocess.Popen([need("redis-server"), str(config), *args], cwd=home)
    servers.procs.append(proc)


def start_redis_servers(servers: Servers, root: Path, cert: Path, key: Path) -> None:
    """A TLS-only Redis, and a plain master with a Sentinel that monitors it."""
    password = servers.env["REDIS_PASSWORD"]
    start_redis(
        servers,
        root,
        "redis-tls",
        f"port 0\nbind 127.0.0.1 127.0.0.2\ntls-port {servers.tls_redis_port}\n"
        f"tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {servers.ca}\n"
        f"tls-auth-clients no\nrequirepass {password}\n",
    )
    start_redis(
        servers,
        root,
        "master",
        f"port {servers.master_port}\nbind 127.0.0.1\nrequirepass {password}\n",
    )
    wait_port(servers.master_port, root / "master" / "log")
    start_redis(
        servers,
        root,
        "sentinel",
        f"port {servers.sentinel_port}\nbind 127.0.0.1\n"
        f"sentinel monitor {MASTER} 127.0.0.1 {servers.master_port} 1\n"
        f"sentinel auth-pass {MASTER} {password}\n",
        "--sentinel",
    )
    wait_port(servers.tls_redis_port, root / "redis-tls" / "log")
    wait_port(servers.sentinel_port, root / "sentinel" / "log")


def stop_servers(servers: Servers, root: Path) -> None:
    for proc in servers.procs:
        proc.terminate()
    for proc in servers.procs:
        proc.wait(timeout=10)
    subprocess.run(
        [need("pg_ctl"), "-D", str(root / "pg" / "data"), "-m", "immediate", "stop"],
        cwd=root,
        capture_output=True,
        check=False,
        **({"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}),
    )
    shutil.rmtree(root, ignore_errors=True)


@contextmanager
def managed_servers(project: Path) -> Iterator[Servers]:
    """The servers for a rendered project, with the passwords of its .env; stopped after."""
    env = read_env(project / ".env")
    root = Path(tempfile.mkdtemp(prefix="managed-services-"))
    root.chmod(0o755)  # PostgreSQL's user reaches its folder inside
    ca, other_ca, cert, key = certificates(root)
    pg_port = start_tls_postgres(root, env, cert, key)
    servers = Servers(project, env, ca, other_ca, pg_port, free_port(), free_port(), free_port())
    try:
        start_redis_servers(servers, root, cert, key)
        yield servers
    finally:
        stop_servers(servers, root)
