"""An episode solved through ROS 2: ``manip-rl demo`` starts sim_arm and policy_bridge in their
own processes (DDS on localhost, a domain of their own) and serves a trained, exported PandaReach
policy to the simulated arm in real time, with latency and domain randomization on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("rclpy")

from manip_rl.ros_bridge import dds  # noqa: E402

pytestmark = pytest.mark.ros


def _trained_policy(tmp_path) -> str:
    """The shipped PandaReach policy file; without one, a PandaReach run under runs/ exported
    now (the same `manip-rl export` path a user takes)."""
    path = dds.default_policy_path()
    if path is not None:
        return str(path)
    runs = sorted(
        (p for p in (dds.REPO_ROOT / "runs").glob("*reach*") if (p / "config.yaml").exists()),
        key=lambda p: p.stat().st_mtime,
    )
    for run in reversed(runs):
        out = tmp_path / "reach.pt"
        proc = subprocess.run(
            [sys.executable, "-m", "manip_rl.cli", "export", str(run), "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if proc.returncode == 0:
            return str(out)
    pytest.skip(
        "no shipped policy file (manip_rl/policies/pretrained/*.pt) and no PandaReach run under "
        "runs/: train and export a PandaReach policy to run this test"
    )


def _demo(policy: str, tmp_path, domain: int, timeout: float) -> tuple[dict, str]:
    """`manip-rl demo` over 3 episodes in a domain of its own: (its JSON results, its stdout)."""
    out = tmp_path / "demo.json"
    proc = subprocess.run(
        [sys.executable, "-m", "manip_rl.cli", "demo", "--policy", policy, "--episodes", "3",
         "--json", str(out)],
        env=dds.local_env(dds.domain_id_for(domain)),
        capture_output=True,
        text=True,
        timeout=timeout,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["episodes"] == 3
    return result, proc.stdout


def test_episode_solved_through_ros(tmp_path):
    result, stdout = _demo(_trained_policy(tmp_path), tmp_path, 7, timeout=150)
    assert result["successes"] >= 1, f"no episode solved through ROS 2:\n{stdout}"
    loop = result["loop"]
    # Three 2 s episodes at 25 Hz: commands flowed at the control rate.
    assert loop["commands"] >= 3 * 40
    assert abs(loop["loop_rate_hz"] - 25.0) < 2.5, loop
    assert "success through ROS 2" in stdout


def test_demo_refuses_a_missing_policy_file(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "manip_rl.cli", "demo", "--policy", str(tmp_path / "nope.pt")],
        env=dds.local_env(dds.domain_id_for(8)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "nope.pt" in proc.stderr and "does not exist" in proc.stderr


def test_push_episode_solved_through_ros(tmp_path):
    """The shipped PandaPush policy (TCP deltas: the bridge maps them with the TCP Jacobian of
    the measured joints, the floor and the posture pull from the file's action spec) pushes the
    cube through ROS 2, reading the cube's pose and the goal from sim_arm's topics."""
    policy = dds.REPO_ROOT / "manip_rl" / "policies" / "pretrained" / "panda_push.pt"
    result, stdout = _demo(str(policy), tmp_path, 9, timeout=180)
    assert result["successes"] >= 2, f"Push through ROS 2:\n{stdout}"
    assert abs(result["loop"]["loop_rate_hz"] - 25.0) < 2.5, result["loop"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning two nodes needs 2 CPUs")
def test_nodes_pinned_to_their_own_cpus_still_serve(tmp_path):
    """`--cpus` on sim-arm and serve (SimSession's sim_cpus / bridge_cpus, `demo --pin`): each
    node process, and so its DDS threads, runs only on its CPU, and the loop still serves."""
    from manip_rl.demo import pinned_cpus
    from manip_rl.ros_bridge.session import SimSession, summarize_stats

    pins = pinned_cpus(True)
    session = SimSession(
        _trained_policy(tmp_path), domain_id=dds.domain_id_for(10), workdir=tmp_path, **pins
    )
    with session:
        for name, key in (("sim_arm", "sim_cpus"), ("policy_bridge", "bridge_cpus")):
            pid = session.procs[name].pid
            threads = os.listdir(f"/proc/{pid}/task")
            assert len(threads) > 1  # the DDS threads came after the pin: they inherit it
            for tid in threads:
                assert os.sched_getaffinity(int(tid)) == {int(pins[key])}, (name, tid)
        session.run_episode(1.0)
    assert f"pinned to CPU {pins['bridge_cpus']}" in session.log("policy_bridge")
    assert summarize_stats(session.bridge_stats())["commands"] >= 20


def test_a_cpu_list_that_cannot_be_used_is_refused_with_its_reason():
    allowed = sorted(os.sched_getaffinity(0))
    assert dds.parse_cpus(f"{allowed[0]}") == {allowed[0]}
    assert dds.parse_cpus(f"{allowed[0]}-{allowed[-1]}") == set(range(allowed[0], allowed[-1] + 1))
    with pytest.raises(ValueError, match="not available to this process"):
        dds.parse_cpus("4096")
    with pytest.raises(ValueError, match="not a CPU number or range"):
        dds.parse_cpus("one")
    proc = subprocess.run(
        [sys.executable, "-m", "manip_rl.cli", "serve", "--cpus", "4096"],
        env=dds.local_env(dds.domain_id_for(11)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "CPU [4096] not available" in proc.stderr
