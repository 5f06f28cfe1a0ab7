"""Helpers shared by the nodes, the demo, the tests and the benchmark: keeping DDS on this machine,
starting node processes, and the parameter files.

Every process this package starts gets ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` and a
``ROS_DOMAIN_ID`` of its own caller's choosing, so a demo or a test never talks to other machines
or to other ROS 2 graphs on this one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
# Parameter files live with the launch files (launch/config); an installed package has no
# repository around it, so the CLI falls back to the copies it embeds as defaults.
CONFIG_DIR = REPO_ROOT / "launch" / "config"
SIM_PARAMS = CONFIG_DIR / "sim.yaml"
ROBOT_PARAMS = CONFIG_DIR / "robot.yaml"
PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "policies" / "pretrained"


def domain_id_for(seed: int | None = None) -> int:
    """A ROS domain id in 1..100 derived from ``seed`` (default: this process id), so parallel
    test runs and demos do not share a graph."""
    value = os.getpid() if seed is None else int(seed)
    return 1 + value % 100


def local_env(domain_id: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment for a child process: DDS discovery on localhost only, the given domain."""
    env = dict(os.environ if base is None else base)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(int(domain_id))
    env.pop("ROS_STATIC_PEERS", None)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def keep_dds_local(domain_id: int) -> None:
    """Set this process's own DDS environment (before ``rclpy.init``)."""
    os.environ.update(local_env(domain_id, {}))
    os.environ.pop("ROS_STATIC_PEERS", None)


@contextlib.contextmanager
def local_context(domain_id: int) -> Iterator[Any]:
    """An rclpy context of this process's own on ``domain_id`` with DDS kept on this machine
    (:func:`keep_dds_local`); on exit it is shut down and the process's ``ROS_DOMAIN_ID`` and
    ``ROS_AUTOMATIC_DISCOVERY_RANGE`` are put back. For tests and benchmarks that talk to nodes
    from the driving process."""
    import rclpy

    keys = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID")
    saved = {k: os.environ.get(k) for k in keys}
    keep_dds_local(domain_id)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    try:
        yield context
    finally:
        rclpy.shutdown(context=context)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def manip_rl_command(subcommand: str, args: Sequence[str] = ()) -> list[str]:
    """The command line that runs ``manip-rl SUBCOMMAND ARGS`` with this interpreter."""
    return [sys.executable, "-m", "manip_rl.cli", subcommand, *args]


def start_node(
    subcommand: str,
    args: Sequence[str],
    domain_id: int,
    log_path: str | os.PathLike | None = None,
) -> subprocess.Popen:
    """Start ``manip-rl SUBCOMMAND`` as a child process on a local DDS domain; its output goes to
    ``log_path`` (or is discarded)."""
    out = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            manip_rl_command(subcommand, args),
            env=local_env(domain_id),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if log_path:
            out.close()


def stop_node(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    """Ask a node process to stop (SIGINT, as Ctrl-C), then kill it if it does not."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


_stop_requested = False


def _request_stop(signum, frame) -> None:
    global _stop_requested
    _stop_requested = True


def stop_on_sigterm() -> None:
    """Make SIGTERM stop a node spun by :func:`spin_until_stopped`; call after ``rclpy.init``.

    rclpy's own SIGTERM handler shut the context down under a spinning executor, which then
    raised RCLError ("failed to initialize wait set: the given context is not valid"); raising
    KeyboardInterrupt from the handler instead could land inside rclpy's C++ message take
    ("Unable to convert call argument"). The handler now only sets a flag, which the spin loop
    reads between callbacks, and the node's ``finally`` runs its shutdown in order."""
    global _stop_requested
    _stop_requested = False
    signal.signal(signal.SIGTERM, _request_stop)


def spin_until_stopped(executor, node, poll: float = 0.1) -> None:
    """Spin ``executor`` as ``executor.spin()`` does (one callback per turn, no timeout timer
    made per turn) until SIGTERM (see :func:`stop_on_sigterm`) or the context's shutdown (Ctrl-C).
    A do-nothing timer on ``node`` wakes the wait at least every ``poll`` seconds, so a SIGTERM
    is seen by an idle node too."""
    import rclpy

    node.create_timer(poll, lambda: None)
    while not _stop_requested and rclpy.ok(context=executor.context):
        try:
            executor.spin_once()
        except Exception:
            # Ctrl-C shuts the context down from rclpy's signal handler, possibly mid-wait
            # ("failed to initialize wait set: the given context is not valid"): that is a stop.
            if rclpy.ok(context=executor.context):
                raise
            break


def wait_for(predicate, timeout: float, spin=None, poll: float = 0.01) -> bool:
    """Poll ``predicate`` (spinning ``spin(poll)`` in between) until it holds or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if spin is not None:
            spin(poll)
        else:
            time.sleep(poll)
    return bool(predicate())


def default_policy_path() -> Path | None:
    """The shipped PandaReach policy file, if this build has one."""
    if not PRETRAINED_DIR.is_dir():
        return None
    files = sorted(PRETRAINED_DIR.glob("*.pt"))
    reach = [p for p in files if "reach" in p.name.lower()]
    chosen = reach or files
    return chosen[0] if chosen else None


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 99)) -> list[float]:
    """Percentiles of ``values`` (NaN for none)."""
    if len(values) == 0:
        return [float("nan")] * len(qs)
    return [float(x) for x in np.percentile(np.asarray(values, dtype=np.float64), qs)]


def set_realtime_priority(priority: int) -> str:
    """Run this process under SCHED_FIFO at ``priority`` (1-99), as ros2_control's controller
    manager runs its loop; call before ``rclpy.init`` so the DDS threads inherit it. Returns a
    line for the log; without the permission (CAP_SYS_NICE or an rtprio limit) it says so and
    the process keeps its normal scheduling."""
    if priority <= 0:
        return ""
    if not 1 <= priority <= 99:
        raise ValueError(f"--rt-priority must be 1..99 (SCHED_FIFO), got {priority}")
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (PermissionError, OSError, AttributeError) as e:
        return (
            f"real-time priority {priority} not granted ({e}); running with normal scheduling. "
            "Allow it with `ulimit -r 99` / an rtprio entry in /etc/security/limits.conf"
        )
    locked = lock_memory()
    return f"running under SCHED_FIFO priority {priority}; " + (
        "memory locked" if locked is None else f"memory not locked ({locked})"
    )


def lock_memory() -> str | None:
    """mlockall(MCL_CURRENT | MCL_FUTURE), as ros2_control's realtime_tools lock_memory(): the
    loop never waits for a page to be brought in. Returns None, or why it failed (it needs
    CAP_IPC_LOCK or a large enough `ulimit -l`)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError as e:
        return str(e)
    mcl_current, mcl_future = 1, 2  # <sys/mman.h> on Linux
    if libc.mlockall(mcl_current | mcl_future) != 0:
        return os.strerror(ctypes.get_errno())
    return None


def parse_cpus(spec: str) -> set[int]:
    """A CPU list as taskset and isolcpus write it ("1", "0,2", "2-3") as a set; ValueError
    naming the problem for anything else or for CPUs this process may not run on."""
    cpus: set[int] = set()
    allowed = os.sched_getaffinity(0)
    for part in str(spec).split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if a > b:
                    raise ValueError
                cpus.update(range(a, b + 1))
            else:
                cpus.add(int(part))
        except ValueError:
            raise ValueError(
                f"--cpus {spec!r}: {part!r} is not a CPU number or range; write e.g. 1, 0,2 or 2-3"
            ) from None
    outside = sorted(c for c in cpus if c not in allowed)
    if outside:
        raise ValueError(
            f"--cpus {spec!r}: CPU {outside} not available to this process (it may run on "
            f"{sorted(allowed)})"
        )
    return cpus


def set_cpu_affinity(spec: str | None) -> str:
    """Pin this process to the CPUs of ``spec`` (see :func:`parse_cpus`), as a real robot pins its
    control loop to an isolated core; call before ``rclpy.init`` so the DDS threads inherit it.
    Returns a line for the log ("" when ``spec`` is empty)."""
    if not spec:
        return ""
    cpus = parse_cpus(spec)
    # Every thread: those started by imports before this call (BLAS and OpenMP pools) too, as
    # `taskset -a` does; threads started later inherit it.
    try:
        threads = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, cpus)
        except ProcessLookupError:  # the thread ended meanwhile
            pass
    return f"pinned to CPU {','.join(str(c) for c in sorted(cpus))}"


def apply_realtime_arguments(args) -> list[str]:
    """Apply ``--cpus`` and ``--rt-priority`` (see :func:`add_realtime_arguments`) to this
    process, before ``rclpy.init``; returns the lines for the node's log. A CPU list that
    cannot be used exits with its reason."""
    try:
        cpu_message = set_cpu_affinity(args.cpus)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    return [m for m in (cpu_message, set_realtime_priority(args.rt_priority)) if m]


def add_realtime_arguments(p) -> None:
    p.add_argument(
        "--rt-priority",
        type=int,
        default=0,
        metavar="N",
        help="run under SCHED_FIFO real-time priority N (1-99; default 0: normal scheduling)",
    )
    p.add_argument(
        "--cpus",
        default=None,
        metavar="LIST",
        help="pin the process (and its DDS threads) to these CPUs, as taskset writes them: "
        "1, 0,2 or 2-3 (default: all)",
    )
