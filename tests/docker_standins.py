"""A Docker engine for the compose test, and TEST STAND-INS for the images it cannot pull.

No image registry answers on the machines this template is tested on, so the official images
that compose.yml and the Dockerfiles name (python, uv, postgres, redis, flyway) are replaced, for
the test alone, by images built here from Debian packages and PyPI and passed to compose through
the project's own variables (PYTHON_IMAGE, UV_IMAGE, POSTGRES_IMAGE, REDIS_IMAGE,
FLYWAY_IMAGE). Every stand-in is tagged `async-service-test-standin/<name>:<hash of its recipe>`,
so a Docker data root that persists between runs keeps them, and a changed recipe builds anew.

- python: Debian bookworm's Python 3.11 (`python` on PATH). It trusts the host's CA bundle
  (SSL_CERT_FILE): the machines' connections to PyPI pass through a proxy with its own CA. That
  trick lives here only, never in the project's Dockerfiles.
- uv: the `uv` binary the tests run with, at `/uv` as in ghcr.io/astral-sh/uv.
- postgres: Debian's PostgreSQL 15 behind an entrypoint that follows the parts of the official
  image's contract compose.yml uses (POSTGRES_USER/PASSWORD/DB/INITDB_ARGS, initdb.d scripts
  run once on an empty volume, listening on the network with scram-sha-256, SIGINT to stop,
  a UTF8 cluster).
- redis: Debian's Redis 7.0 (`sh`, `redis-server`, `redis-cli`, /data).
- flyway: NOT Flyway (Java, in neither Debian nor PyPI): the project's own native applier
  (the package `<app>/db/migrate/`, which reads the same FLYWAY_* variables) answering `migrate`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PREFIX = "async-service-test-standin"
ROOTFS_TAG = f"{PREFIX}/debian-rootfs:bookworm"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
APT = "apt-get update -qq && apt-get install -y -qq --no-install-recommends"
CLEAN_APT = "rm -rf /var/lib/apt/lists/*"

POSTGRES_ENTRYPOINT = r"""#!/bin/sh
# TEST STAND-IN for the official postgres image's entrypoint (the parts compose.yml uses).
set -eu
export PGDATA="${PGDATA:-/var/lib/postgresql/data}" POSTGRES_DB="${POSTGRES_DB:-postgres}"
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    # shellcheck disable=SC2086
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" ${POSTGRES_INITDB_ARGS:-} >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    pg_ctl -w -o "-c listen_addresses=''" start >/dev/null
    export PGPASSWORD="$POSTGRES_PASSWORD"
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
            *.sql) psql -X -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f "$f" ;;
        esac
    done
    unset PGPASSWORD
    pg_ctl -w -m fast stop >/dev/null
fi
exec "$@"
"""


def as_root(argv: list[str]) -> list[str]:
    """`argv`, through `sudo -n` unless the tests run as root (GitHub's runners)."""
    return argv if os.geteuid() == 0 else ["sudo", "-n", *argv]


def run(argv: list[str], timeout: float = 600, **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if done.returncode != 0:
        pytest.fail(f"$ {' '.join(argv)}\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done


def engine_answers() -> bool:
    docker = ["docker", "info", "--format", "{{.ServerVersion}}"]
    return subprocess.run(docker, capture_output=True, check=False, timeout=30).returncode == 0


def host_network() -> dict[str, str]:
    """What dockerd changes on the host: ip_forward, the FORWARD policy, a docker0 bridge."""
    forward = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True)
    policy = re.search(r"^-P FORWARD (\w+)", forward.stdout, re.M)
    bridge = subprocess.run(["ip", "link", "show", "docker0"], capture_output=True)
    return {
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text().strip(),
        "policy": policy.group(1) if policy else "",
        "docker0": "yes" if bridge.returncode == 0 else "",
    }


@contextmanager
def docker_engine(workdir: Path) -> Iterator[None]:
    """A Docker engine for the block: the running one, else a dockerd started here (default
    data root, so the stand-ins stay cached) and stopped after, by its pid, with the host's
    ip_forward, FORWARD policy and docker0 bridge put back as they were."""
    if engine_answers():
        yield
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None or os.geteuid() != 0:
        pytest.fail(
            "no Docker engine answers `docker info` and this test cannot start one (dockerd "
            "missing, or not root): install docker.io (Debian) and start dockerd, as .ci/run does",
            pytrace=False,
        )
    before = host_network()
    log = workdir / "dockerd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [dockerd, "--pidfile", str(workdir / "dockerd.pid")],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not engine_answers():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dockerd did not start:\n{log.read_text()[-3000:]}", pytrace=False)
            time.sleep(0.5)
        print(f"started dockerd (pid {proc.pid}); it is stopped after the test")
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        Path("/proc/sys/net/ipv4/ip_forward").write_text(before["ip_forward"] + "\n")
        if before["policy"]:
            subprocess.run(["iptables", "-P", "FORWARD", before["policy"]], check=False)
        if not before["docker0"]:
            subprocess.run(["ip", "link", "delete", "docker0"], capture_output=True, check=False)


def debian_mirror() -> str:
    """The Debian mirror apt already uses, else deb.debian.org."""
    sources = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    for source in sources:
        text = source.read_text(errors="replace") if source.is_file() else ""
        for uri in re.findall(r"(https?://\S+/debian)/?(?:\s|$)", text):
            return uri
    return "http://deb.debian.org/debian"


def image_exists(tag: str) -> bool:
    inspect = ["docker", "image", "inspect", tag]
    return subprocess.run(inspect, capture_output=True, check=False).returncode == 0


def debian_rootfs(workdir: Path) -> str:
    """`debootstrap --variant=minbase bookworm`, imported as an image (once per data root)."""
    if image_exists(ROOTFS_TAG):
        return ROOTFS_TAG
    debootstrap = shutil.which("debootstrap") or shutil.which("/usr/sbin/debootstrap")
    if debootstrap is None:
        pytest.fail("debootstrap is not installed: apt-get install debootstrap", pytrace=False)
    rootfs = workdir / "rootfs"
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    options = [f"--keyring={keyring}"] if keyring.exists() else []
    mirror = debian_mirror()
    run(as_root([debootstrap, "--variant=minbase", *options, "bookworm", str(rootfs), mirror]))
    tar = subprocess.Popen(as_root(["tar", "-C", str(rootfs), "-c", "."]), stdout=subprocess.PIPE)
    run(["docker", "import", "-", ROOTFS_TAG], stdin=tar.stdout)
    assert tar.wait() == 0
    run(as_root(["rm", "-rf", str(rootfs)]))
    return ROOTFS_TAG


def build(name: str, dockerfile: str, files: dict[str, bytes]) -> str:
    """`docker build` of one stand-in, unless an image of the same recipe is there already."""
    recipe = hashlib.sha256(dockerfile.encode())
    for file_name, content in sorted(files.items()):
        recipe.update(file_name.encode() + b"\0" + content)
    tag = f"{PREFIX}/{name}:{recipe.hexdigest()[:12]}"
    if image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "Dockerfile").write_text(dockerfile)
        for file_name, content in files.items():
            (Path(context) / file_name).parent.mkdir(parents=True, exist_ok=True)
            (Path(context) / file_name).write_bytes(content)
            (Path(context) / file_name).chmod(0o755)  # /uv must run
        started = time.monotonic()
        run(["docker", "build", "--label", f"{PREFIX}=yes", "-t", tag, context], timeout=900)
        print(f"built the {name} stand-in {tag} in {time.monotonic() - started:.0f} s")
    return tag


def locked_version(project: Path, package: str) -> str:
    found = re.search(
        rf'^name = "{package}"\nversion = "([^"]+)"', (project / "uv.lock").read_text(), re.M
    )
    assert found, f"{package} is not in uv.lock"
    return found.group(1)


def standin_images(project: Path, app: str, workdir: Path) -> dict[str, str]:
    """Build (or find) every stand-in; the image variables compose should use."""
    rootfs = debian_rootfs(workdir)
    mirror = debian_mirror()
    debian = build(
        "debian",
        f"FROM {rootfs}\n"
        f'RUN printf "deb {mirror} bookworm main\\ndeb {mirror} bookworm-updates main\\n'
        f'deb {mirror}-security bookworm-security main\\n" > /etc/apt/sources.list\n',
        {},
    )
    python = build(
        "python",
        f"FROM {debian}\n"
        f"RUN {APT} python3 && {CLEAN_APT} && ln -s /usr/bin/python3 /usr/local/bin/python\n"
        "COPY host-ca.crt /usr/local/share/test-standin-ca.crt\n"
        "ENV SSL_CERT_FILE=/usr/local/share/test-standin-ca.crt\n",
        {"host-ca.crt": HOST_CA.read_bytes()},
    )
    uv_binary = shutil.which("uv")
    assert uv_binary, "uv is not on PATH: run the tests with nox"
    uv = build("uv", "FROM scratch\nCOPY uv /uv\n", {"uv": Path(uv_binary).read_bytes()})
    postgres = build(
        "postgres",
        f"FROM {debian}\n"
        "RUN mkdir -p /etc/postgresql-common && echo 'create_main_cluster = false' "
        "> /etc/postgresql-common/createcluster.conf\n"
        f"RUN {APT} postgresql-15 && {CLEAN_APT}\n"
        "COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh\n"
        "RUN chmod 755 /usr/local/bin/docker-entrypoint.sh && mkdir /docker-entrypoint-initdb.d\n"
        # UTF8, as the official image's LANG gives (initdb under no locale makes SQL_ASCII).
        "ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data LANG=C.UTF-8\n"
        "STOPSIGNAL SIGINT\n"
        'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]\nCMD ["postgres"]\n',
        {"entrypoint.sh": POSTGRES_ENTRYPOINT.encode()},
    )
    redis = build(
        "redis",
        f"FROM {debian}\nRUN {APT} redis-server && {CLEAN_APT} && mkdir -p /data\n"
        'WORKDIR /data\nCMD ["redis-server"]\n',
        {},
    )
    psycopg = locked_version(project, "psycopg")
    flyway = build(
        "flyway-is-the-native-applier",
        f"FROM {python}\nCOPY --from={uv} /uv /usr/local/bin/uv\n"
        "RUN uv pip install --system --break-system-packages --no-cache "
        f'"psycopg[binary]=={psycopg}"\n'
        "COPY native_migrate /flyway/native_migrate\nWORKDIR /flyway\n"
        'ENTRYPOINT ["python", "-m", "native_migrate"]\n',
        {
            f"native_migrate/{module.name}": module.read_bytes()
            for module in sorted((project / "src" / app / "db" / "migrate").glob("*.py"))
        },
    )
    return {
        "PYTHON_IMAGE": python,
        "UV_IMAGE": uv,
        "POSTGRES_IMAGE": postgres,
        "REDIS_IMAGE": redis,
        "FLYWAY_IMAGE": flyway,
    }
