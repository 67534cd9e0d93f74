"""Network namespaces: each app and each build has a network of its own, joined to the host by a veth pair.

Measured and chosen over slirp4netns and pasta: a veth pair is the kernel's own path (the router reaches an app at
its address with no user-space relay in between, so it costs the router nothing measurable), and nftables rules on
the host side can tell every packet of a sandbox from the host's own. slirp4netns still reaches host services bound
to 0.0.0.0 through the host's other addresses, as the host's own slirp process, which no rule can tell apart; pasta
opens the host's loopback ports inside by default.

The rules (one `inet runix` table, replaced atomically, shared by every Runix server on the machine):
- input: a sandbox interface may answer connections the host opened (the router's, the health checks) but opens
  none to any address of the host: not its loopback services, the Runix API, the router, Caddy's admin, PostgreSQL;
- forward: no sandbox reaches another one, and nothing from outside reaches a sandbox;
- postrouting: what a sandbox sends to the outside world (registries, APIs) leaves masqueraded as the host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

NETNS_DIR = Path("/run/netns")
HOST_IFACE_PREFIX = "rxh"  # host side of each veth pair: rxh<slot>
SANDBOX_IFACE = "eth0"
TABLE = "runix"
COMMAND_TIMEOUT = 20.0
MAKE_ATTEMPTS = 3


class NetworkUnavailable(Exception):
    """Network namespaces, veth or nftables cannot be used here."""


def _run(argv: list[str], stdin: str | None = None) -> None:
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"})
    except FileNotFoundError as exc:
        raise NetworkUnavailable(f"{argv[0]} is not installed: install the 'iproute2' and 'nftables' packages "
                                 "(apt-get install iproute2 nftables)") from exc
    except subprocess.TimeoutExpired as exc:
        raise NetworkUnavailable(f"`{' '.join(argv)}` did not finish within {COMMAND_TIMEOUT:g}s") from exc
    if done.returncode != 0:
        said = done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}"
        raise NetworkUnavailable(f"`{' '.join(argv)}` failed: {said}")


def _ruleset(subnet: ipaddress.IPv4Network) -> str:
    sandboxes = f'"{HOST_IFACE_PREFIX}*"'
    return f"""
table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  chain input {{
    type filter hook input priority filter - 10; policy accept;
    iifname {sandboxes} ct state established,related accept
    iifname {sandboxes} reject with icmpx type admin-prohibited
  }}
  chain forward {{
    type filter hook forward priority filter - 10; policy accept;
    iifname {sandboxes} oifname {sandboxes} reject with icmpx type admin-prohibited
    oifname {sandboxes} ct state established,related accept
    oifname {sandboxes} drop
    iifname {sandboxes} accept
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != {sandboxes} masquerade
  }}
}}
"""


def _default_mtu() -> int:
    """The MTU of the interface the default route leaves by, so a sandbox's packets fit the way out."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/net/route").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == "00000000":
                return int(Path(f"/sys/class/net/{fields[0]}/mtu").read_text())
    return 1500


@dataclass(frozen=True)
class Network:
    """The network of one slot: its namespace, and the addresses on either end of its veth pair."""

    name: str
    host_iface: str
    host_address: str
    sandbox_address: str

    @property
    def path(self) -> Path:
        return NETNS_DIR / self.name

    def open(self) -> int:
        """A file descriptor of the namespace, for setns() in a child."""
        return os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)


class Networks:
    """The host side: the nftables table, forwarding, and one namespace per slot, made on first use and kept."""

    def __init__(self, subnet: str):
        self.subnet = ipaddress.IPv4Network(subnet)
        if self.subnet.prefixlen > 24:
            raise NetworkUnavailable(f"RUNIX_SANDBOX_SUBNET {subnet} is too small: use a /24 or larger")
        self.mtu = _default_mtu()
        self._ready: set[int] = set()

    @property
    def capacity(self) -> int:
        return self.subnet.num_addresses // 4

    def install(self) -> None:
        """Forwarding on and Runix's rules in place (idempotent; the rules are replaced in one transaction)."""
        _run(["nft", "-f", "-"], _ruleset(self.subnet))
        try:
            Path("/proc/sys/net/ipv4/ip_forward").write_text("1\n")
        except OSError as exc:
            raise NetworkUnavailable(f"cannot turn on IPv4 forwarding for the sandboxes' way out: {exc}") from exc

    def network(self, slot: int) -> Network:
        base = self.subnet.network_address + 4 * slot
        return Network(name=f"runix-{slot}", host_iface=f"{HOST_IFACE_PREFIX}{slot}", host_address=str(base + 1),
                       sandbox_address=str(base + 2))

    def prepare(self, slot: int) -> Network:
        """The slot's namespace, made now if this process has not checked it yet (the caller holds the slot)."""
        net = self.network(slot)
        if slot in self._ready:
            return net
        if not (net.path.exists() and Path(f"/sys/class/net/{net.host_iface}").exists()):
            for attempt in range(MAKE_ATTEMPTS):  # a namespace a dead holder left may still be going away
                try:
                    self._make(net)
                    break
                except NetworkUnavailable:
                    if attempt == MAKE_ATTEMPTS - 1:
                        raise
        self._ready.add(slot)
        return net

    def _make(self, net: Network) -> None:
        with contextlib.suppress(NetworkUnavailable):  # half made by a process that died: start over
            _run(["ip", "netns", "delete", net.name])
        with contextlib.suppress(NetworkUnavailable):
            _run(["ip", "link", "delete", net.host_iface])
        prefix = "/30"
        _run(["ip", "netns", "add", net.name])
        _run(["ip", "-batch", "-"], "\n".join([
            f"link add {net.host_iface} mtu {self.mtu} type veth peer name {SANDBOX_IFACE} mtu {self.mtu} "
            f"netns {net.name}",
            f"addr add {net.host_address}{prefix} dev {net.host_iface}",
            f"link set {net.host_iface} up",
        ]) + "\n")
        _run(["ip", "-n", net.name, "-batch", "-"], "\n".join([
            "link set lo up",
            f"addr add {net.sandbox_address}{prefix} dev {SANDBOX_IFACE}",
            f"link set {SANDBOX_IFACE} up",
            f"route add default via {net.host_address}",
        ]) + "\n")
        # Inside: what arrives on the veth for any TCP port goes to that port on the namespace's loopback, so an app
        # that listens on 127.0.0.1 (as most do by default) is reached as well as one that listens on 0.0.0.0.
        _run(["ip", "netns", "exec", net.name, "sysctl", "-qw", f"net.ipv4.conf.{SANDBOX_IFACE}.route_localnet=1"])
        _run(["ip", "netns", "exec", net.name, "nft", "-f", "-"], f"""
table ip {TABLE} {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "{SANDBOX_IFACE}" meta l4proto tcp dnat to 127.0.0.1
  }}
}}
""")
