"""Running a Ray test body inside a loopback-only network namespace.

Ray binds to the machine's non-loopback interface and connects to it even when told to use
127.0.0.1; these machines allow loopback only. Each Ray test module runs its body (one script,
one Ray cluster for the whole module) as ``unshare -n sh -c 'ip link set lo up; python BODY'``
and asserts on the JSON it prints. Without ``unshare`` (or the right to use it) the tests fail
with the reason; they never skip, and never run Ray on the host network."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

from manip_rl.distributed.netns import in_loopback_namespace, probe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARK = "RAY_BODY_RESULT "


def run_body(script: str, out_dir: str, timeout: float, *args: str) -> dict:
    """Run ``tests/<script>`` in a fresh loopback-only namespace; its result dict (the body
    prints ``RAY_BODY_RESULT {json}``). Ray's files go to a short private temp dir (Unix socket
    paths are limited to 107 bytes), removed afterwards."""
    probe()  # fails loudly (RuntimeError) where no namespace can be made
    ray_tmp = tempfile.mkdtemp(prefix="mrl", dir="/tmp")
    env = {**os.environ, "PYTHONPATH": ROOT, "RAY_TMPDIR": ray_tmp, "RAY_DEDUP_LOGS": "0"}
    env.pop("RAY_ADDRESS", None)
    argv = in_loopback_namespace(
        [sys.executable, os.path.join(ROOT, "tests", script), out_dir, *args]
    )
    try:
        r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(MARK)]
    if r.returncode != 0 or not lines:
        tail = "\n".join((r.stdout + r.stderr).splitlines()[-60:])
        raise AssertionError(f"{script} failed (rc {r.returncode}):\n{tail}")
    return json.loads(lines[-1][len(MARK) :])


def emit(result: dict) -> None:
    """Print the body's result for :func:`run_body`."""
    print(MARK + json.dumps(result), flush=True)


def tcp_peers() -> list[str]:
    """Every local and peer address of this namespace's TCP sockets (``ss -tn``)."""
    out = subprocess.run(["ss", "-tnH"], capture_output=True, text=True, check=True).stdout
    addrs = []
    for line in out.splitlines():
        cols = line.split()
        addrs += [c.rsplit(":", 1)[0] for c in cols[3:5]]
    return addrs
