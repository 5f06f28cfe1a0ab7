"""Keeping Ray on loopback for tests and benchmarks: a network namespace with only ``lo``.

Ray binds to the machine's non-loopback interface and connects to it even when told
``--node-ip-address 127.0.0.1``. Inside ``unshare -n`` with ``lo`` up there is no other
interface, so every Ray socket is on 127.0.0.1. This module checks for that and re-runs a
command inside one (root, or a user namespace, is needed: ``unshare -n``)."""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
from collections.abc import Sequence


def interfaces() -> list[str]:
    """The network interfaces of this process's namespace (asked of the kernel: /sys/class/net
    shows the namespace that mounted sysfs, not this one)."""
    return sorted(name for _, name in socket.if_nameindex())


def loopback_only() -> bool:
    """Whether the only network interface in this process's namespace is ``lo``."""
    return interfaces() == ["lo"]


def require_loopback_only(what: str) -> None:
    """Refuse (RuntimeError) to go on outside a loopback-only namespace."""
    if not loopback_only():
        raise RuntimeError(
            f"{what} starts Ray, which would bind and connect to {interfaces()}; run it inside a "
            "network namespace with only loopback: unshare -n sh -c 'ip link set lo up; ...'"
        )


def in_loopback_namespace(argv: Sequence[str]) -> list[str]:
    """``argv`` wrapped to run inside a new network namespace with only ``lo`` (up), in a PID
    namespace of its own.

    Raises RuntimeError, never falls back to the host network, when ``unshare`` or ``ip`` is
    missing."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            raise RuntimeError(
                f"{tool!r} is not installed: the Ray tests run only inside a loopback-only "
                "network namespace (apt-get install util-linux iproute2)"
            )
    inner = "ip link set lo up && " + " ".join(shlex.quote(a) for a in argv)
    # Also a PID namespace (-p -f --mount-proc): when its first process (sh) ends or is killed
    # (--kill-child), the kernel ends every process left in it, so a failed body leaves no Ray
    # process behind (nor one holding the caller's pipes open).
    return ["unshare", "-n", "-p", "-f", "--mount-proc", "--kill-child", "sh", "-c", inner]


def probe() -> None:
    """Raise RuntimeError naming why a loopback-only namespace cannot be made here."""
    r = subprocess.run(
        in_loopback_namespace(["cat", "/proc/net/dev"]), capture_output=True, text=True
    )
    if r.returncode != 0:
        raise RuntimeError(
            "cannot make a loopback-only network namespace (`unshare -n`: needs root or user "
            f"namespaces): {r.stderr.strip()[:300]}"
        )
