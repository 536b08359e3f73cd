"""Several hosts on one machine, for test_hosts.py: network namespaces on a switch of their own.

Each host is a network namespace (`hosts-<name>`) with one veth whose other end is a port of a
Linux bridge in a namespace of its own (`hosts-switch`); the test's own namespace has a port too
(10.77.0.1), so the test reaches every host directly. Bridging happens inside `hosts-switch`,
whose netfilter tables are empty: a Docker engine started meanwhile (iptables FORWARD policy
DROP, br_netfilter) changes the machine's own namespace, not this one. Cutting a host's link
sets its switch port down, as a pulled cable or a dead switch port would: the host's processes
get no error, their packets are lost until the port comes back.

`Network.close` stops every process in the namespaces (by the namespaces' own pid lists, so
only what runs inside them) and deletes the namespaces; deleting a namespace deletes its veths
and the bridge. It runs on any failure, and a run that died before it left nothing behind that
the next run's `Network.__init__` does not delete first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PREFIX = "hosts-"
SWITCH = f"{PREFIX}switch"
SUBNET = "10.77.0"
TEST_ADDRESS = f"{SUBNET}.1"
ROOT_LINK = "hosts77"  # the test's port, in the machine's own namespace


class NetworkError(RuntimeError):
    """A namespace or link command failed; the message says which and why."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise NetworkError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")
    return done


def require_namespaces() -> None:
    """Fail with what to do when this user may not make network namespaces (CI runs as root)."""
    probe = f"{PREFIX}probe"
    ip("netns", "del", probe, check=False)
    made = ip("netns", "add", probe, check=False)
    ip("netns", "del", probe, check=False)
    if made.returncode != 0:
        raise NetworkError(
            "this test needs network namespaces (`ip netns add`, CAP_SYS_ADMIN and CAP_NET_ADMIN) "
            f"and was refused: {made.stderr.strip() or 'no reason given'}; run it as root (as "
            "CI does) or in a container started with --cap-add NET_ADMIN --cap-add SYS_ADMIN"
        )


@dataclass(frozen=True)
class Host:
    """One host: its namespace, its switch port, and its addresses (one per link)."""

    name: str
    addresses: tuple[str, ...]

    @property
    def namespace(self) -> str:
        return f"{PREFIX}{self.name}"

    def port(self, index: int = 0) -> str:
        """The switch port of its link number `index` (the link to cut)."""
        return f"sw-{self.name}{index}"[:15]


class Network:
    """Hosts on one switch; `cut` and `restore` a link; `close` undoes everything."""

    def __init__(self, hosts: list[Host]) -> None:
        self.hosts = hosts
        self.sweep()
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        ip("netns", "add", SWITCH)
        ip("-n", SWITCH, "link", "set", "lo", "up")
        ip("-n", SWITCH, "link", "add", "br0", "type", "bridge")
        ip("-n", SWITCH, "link", "set", "br0", "up")
        # The test's own port: its end stays in the machine's namespace.
        self._link(ROOT_LINK, "sw-test", None, TEST_ADDRESS)
        for host in self.hosts:
            ip("netns", "add", host.namespace)
            ip("-n", host.namespace, "link", "set", "lo", "up")
            if len(host.addresses) > 1:
                self._multihomed(host)
            for index, address in enumerate(host.addresses):
                end = f"{PREFIX}{host.name}{index}"[:15]
                self._link(end, host.port(index), host, address)
                if len(host.addresses) > 1:  # replies from an address leave by its own link
                    table = str(100 + index)
                    ip("-n", host.namespace, "rule", "add", "from", address, "table", table)
                    ip("-n", host.namespace, "route", "add", f"{SUBNET}.0/24", "dev", end,
                       "src", address, "table", table)  # fmt: skip

    def _multihomed(self, host: Host) -> None:
        """Several links on one subnet: each answers ARP for its own address only, and no
        reverse-path check drops what arrives on the other one."""
        settings = ("arp_ignore=1", "arp_announce=2", "rp_filter=0")
        for scope in ("all", "default"):
            for setting in settings:
                subprocess.run(
                    [*self.exec(host), "sysctl", "-qw", f"net.ipv4.conf.{scope}.{setting}"],
                    check=True,
                    capture_output=True,
                )

    def _link(self, end: str, port: str, host: Host | None, address: str) -> None:
        """A veth pair: `end` with `address` (in `host`, or here), `port` on the switch."""
        ip("link", "add", end, "type", "veth", "peer", "name", port)
        ip("link", "set", port, "netns", SWITCH)
        ip("-n", SWITCH, "link", "set", port, "master", "br0", "up")
        where = [] if host is None else ["-n", host.namespace]
        if host is not None:
            ip("link", "set", end, "netns", host.namespace)
        ip(*where, "addr", "add", f"{address}/24", "dev", end)
        ip(*where, "link", "set", end, "up")

    def cut(self, host: Host, index: int = 0) -> None:
        """Pull the cable: the host's switch port goes down, its packets are lost."""
        ip("-n", SWITCH, "link", "set", host.port(index), "down")

    def restore(self, host: Host, index: int = 0) -> None:
        ip("-n", SWITCH, "link", "set", host.port(index), "up")

    def exec(self, host: Host) -> list[str]:
        """The command prefix that runs a program on `host`."""
        return ["ip", "netns", "exec", host.namespace]

    @staticmethod
    def sweep() -> None:
        """Stop what runs in this test's namespaces and delete them (and the test's port)."""
        names = [
            line.split()[0]
            for line in ip("netns", "list", check=False).stdout.splitlines()
            if line.startswith(PREFIX)
        ]
        for name in names:
            stop_all(name)
        for name in names:
            ip("netns", "del", name, check=False)
        ip("link", "del", ROOT_LINK, check=False)

    def close(self) -> None:
        self.sweep()
        left = [n for n in ip("netns", "list", check=False).stdout.split() if n.startswith(PREFIX)]
        link = ip("link", "show", ROOT_LINK, check=False).returncode == 0
        if left or link:
            raise NetworkError(f"could not delete namespaces {left} / link {ROOT_LINK}: {link}")


def pids_in(namespace: str) -> list[int]:
    out = ip("netns", "pids", namespace, check=False).stdout.split()
    return [int(pid) for pid in out if pid.isdigit() and int(pid) != os.getpid()]


def stop_all(namespace: str, grace: float = 5.0) -> None:
    """SIGTERM every process in `namespace`, then SIGKILL what is left after `grace` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        pids = pids_in(namespace)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            for pid in pids:  # reap our own children, or they stay listed as zombies
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
            pids = [pid for pid in pids_in(namespace) if Path(f"/proc/{pid}").exists()]
            time.sleep(0.1)
        if not pids:
            return
