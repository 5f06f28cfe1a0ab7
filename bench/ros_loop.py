"""The policy served over ROS 2, measured against peers in the same run.

1. **Success**: the same policy file through ROS 2 (sim_arm + policy_bridge in two processes,
   real time, launch/config/sim.yaml: sensor and actuator latency 10 ms each, domain
   randomization on) vs its in-process evaluation (the gymnasium env with the same
   randomization, success at the last step of each episode).
2. **Loop timing at 100 Hz and 500 Hz**: the bridge's command period error and its
   JointState-received -> command-published latency (both timed inside the bridge process with
   ``time.perf_counter``), and overruns (control ticks missed entirely). The peer is a bare rclpy
   timer at the same rate in its own process, measured in the same run. Beside the timed window
   stall probes (on each CPU a pinned process above the nodes' priority that only sleeps 1 ms)
   count the moments when the machine itself did not run them for more than a period, and the
   overruns that fell at one of them. Policies run at the
   period they were trained for, so these runs serve a copy of the policy file whose metadata
   says ``control_period_s`` = 1/rate (same weights, same hash; made with
   :func:`retimed_copy`); the arm then moves faster than in training, which the safety filter's
   speed limit catches: only the timing is measured.

    python bench/ros_loop.py --policy reach.pt            # everything (about 4 minutes)
    python bench/ros_loop.py --policy reach.pt --skip-success --seconds-500 10
    python bench/ros_loop.py --rt-priority 20     # both nodes and the peer under SCHED_FIFO
    python bench/ros_loop.py --rt-priority 20 --pin   # and sim_arm / bridge on CPUs of their own
    python bench/ros_loop.py --policy reach.onnx      # the bridge running ONNX Runtime

Figures on a shared, loaded machine are preliminary; the JSON written with ``--out`` keeps them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

from manip_rl.fileio import atomic_path, atomic_write_text
from manip_rl.ros_bridge import dds

PEER_TIMER = textwrap.dedent(
    """
    import json, os, sys, time
    import rclpy
    rate, seconds, rt = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    if sys.argv[4]:
        os.sched_setaffinity(0, {int(sys.argv[4])})
    if rt:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt))
    rclpy.init()
    node = rclpy.create_node("peer_timer")
    stamps = []
    node.create_timer(1.0 / rate, lambda: stamps.append(time.perf_counter()))
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        rclpy.spin_once(node, timeout_sec=0.1)
    print(json.dumps(stamps))
    """
)


# A cyclictest-like probe: on each CPU, a process pinned there, above the nodes' real-time
# priority (so that they cannot delay it), that only sleeps 1 ms and records how late it woke.
# It runs beside the bridge for the whole timed window, so a stall of the machine itself (this is
# a shared VM, whose virtual CPUs the host can pause) shows in both at the same moment.
STALL_PROBE = textwrap.dedent(
    """
    import json, os, sys, time
    seconds, rt, limit = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    os.sched_setaffinity(0, {int(sys.argv[4])})
    if rt:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt))
    clock, stalls, worst, n = time.perf_counter, [], 0.0, 0
    prev = clock()
    end = prev + seconds
    while prev < end:
        time.sleep(0.001)
        now = clock()
        late = now - prev - 0.001
        worst = max(worst, late)
        if late > limit:
            stalls.append([now, late])
        prev, n = now, n + 1
    print(json.dumps({"wakeups": n, "worst_s": worst, "stalls": stalls}))
    """
)


def retimed_copy(policy: str, control_period: float, out: str) -> str:
    """A copy of a policy file (TorchScript or ONNX) whose metadata gives another control
    period."""
    import torch

    from manip_rl.export import METADATA_FILE, load_policy

    if policy.lower().endswith(".onnx"):
        import onnx

        model = onnx.load(policy)
        for prop in model.metadata_props:
            if prop.key == METADATA_FILE:
                md = json.loads(prop.value)
                md["control_period_s"] = control_period
                md.setdefault("provenance", {})["retimed_for_benchmark"] = True
                prop.value = json.dumps(md, indent=1)
        out = os.path.splitext(out)[0] + ".onnx"
        with atomic_path(out) as tmp:
            onnx.save(model, tmp)
        load_policy(out)
        return out
    extra = {METADATA_FILE: ""}
    module = torch.jit.load(policy, map_location="cpu", _extra_files=extra)
    md = json.loads(extra[METADATA_FILE])
    md["control_period_s"] = control_period
    md.setdefault("provenance", {})["retimed_for_benchmark"] = True
    with atomic_path(out) as tmp:
        torch.jit.save(module, tmp, _extra_files={METADATA_FILE: json.dumps(md, indent=1)})
    load_policy(out)  # still a valid policy file
    return out


def in_process_success(policy: str, episodes: int, randomization: str, seed: int) -> float:
    import gymnasium as gym

    import manip_rl  # noqa: F401
    from manip_rl import policy_io
    from manip_rl.export import load_policy

    p = load_policy(policy)
    env = gym.make(p.env_id, randomization=randomization)
    wins = 0
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(p.act(policy_io.flatten_observation(obs)))
            done = term or trunc
        wins += bool(info["is_success"])
    return wins / episodes


def ros_success(
    policy: str, episodes: int, workdir: str, rt_priority: int = 0, pins: dict | None = None
) -> tuple[float, dict]:
    from manip_rl.demo import episode_steps
    from manip_rl.export import read_metadata
    from manip_rl.ros_bridge.session import SimSession, summarize_stats

    md = read_metadata(policy)
    duration = episode_steps(md["env_id"], md.get("env_kwargs")) * float(md["control_period_s"])
    wins = 0
    session = SimSession(
        policy, env_id=md["env_id"], workdir=workdir, rt_priority=rt_priority, **(pins or {})
    )
    with session:
        for _ in range(episodes):
            wins += session.run_episode(duration)
    return wins / episodes, summarize_stats(session.bridge_stats())


def ros_timing(
    policy: str,
    rate: float,
    seconds: float,
    workdir: str,
    trigger: str,
    rt_priority: int = 0,
    pins: dict | None = None,
) -> dict:
    from manip_rl.export import read_metadata
    from manip_rl.ros_bridge.session import SimSession, summarize_stats

    md = read_metadata(policy)
    retimed = retimed_copy(policy, 1.0 / rate, os.path.join(workdir, f"policy_{rate:g}hz.pt"))
    session = SimSession(
        retimed,
        env_id=md["env_id"],
        bridge_params=["-p", f"control_rate:={rate}", "-p", f"trigger:={trigger}"],
        sim_params=["-p", "joint_state_rate:=500.0"],
        workdir=os.path.join(workdir, f"{rate:g}hz_{trigger}"),
        rt_priority=rt_priority,
        **(pins or {}),
    )
    with session:
        # The probes start with the episode and outlast it by a little.
        probes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    STALL_PROBE,
                    str(seconds + 2.0),
                    str(min(99, rt_priority + 10) if rt_priority else 0),
                    str(1.0 / rate),
                    str(cpu),
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for cpu in sorted(os.sched_getaffinity(0))
        ]
        t0 = time.perf_counter()  # CLOCK_MONOTONIC: the bridge's stamps are on the same clock
        session.run_episode(seconds)
        outs = [json.loads(p.communicate(timeout=seconds + 30)[0]) for p in probes]
    stats = session.bridge_stats()
    result = summarize_stats(stats)
    result.update(_match_stalls(stats.get("overruns", []), outs))
    # When each overrun came, in seconds after the episode started (a start-up cost shows as 0.x).
    result["overrun_at_s"] = [round(t - t0, 3) for t, _ in stats.get("overruns", [])]
    return result


def _match_stalls(overruns: list, probes: list[dict]) -> dict:
    """The bridge's overruns next to the probes' stalls: how many fell within 10 ms of one (a
    stall of length L spans the L before the probe's late wakeup)."""
    spans = [(t - late, t) for p in probes for t, late in p["stalls"]]
    shared = sum(any(a - 0.010 <= t <= b + 0.010 for a, b in spans) for t, _ in overruns)
    return {
        "overrun_late_ms": [round(late * 1e3, 2) for _, late in overruns],
        "probe_stalls": len(spans),  # wakeups more than one period late, all CPUs
        "probe_worst_ms": 1e3 * max(p["worst_s"] for p in probes),
        "overruns_at_probe_stall": shared,
    }


def peer_timer(rate: float, seconds: float, rt_priority: int = 0, cpu: str = "") -> dict:
    env = dds.local_env(dds.domain_id_for(os.getpid() + 1))
    out = subprocess.run(
        [sys.executable, "-c", PEER_TIMER, str(rate), str(seconds), str(rt_priority), cpu],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    stamps = np.asarray(json.loads(out.stdout))
    intervals = np.diff(stamps)
    err = np.abs(intervals - 1.0 / rate) * 1e3
    p50, p99 = dds.percentiles(err)
    return {
        "period_error_p50_ms": p50,
        "period_error_p99_ms": p99,
        "samples": len(err),
        # As the bridge counts them: a tick that came more than one period late.
        "overruns": int(np.sum(intervals > 2.0 / rate)),
        "loop_rate_hz": float(1.0 / intervals.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default=None, help="policy file (default: the shipped one)")
    ap.add_argument("--episodes", type=int, default=40, help="episodes through ROS 2")
    ap.add_argument("--inproc-episodes", type=int, default=200)
    ap.add_argument("--randomization", default="default", help="as sim.yaml's sim_arm")
    ap.add_argument("--seconds-100", type=float, default=20.0)
    ap.add_argument("--seconds-500", type=float, default=60.0)
    ap.add_argument("--trigger", default="state", choices=("state", "timer"))
    ap.add_argument("--skip-success", action="store_true")
    ap.add_argument(
        "--rt-priority",
        type=int,
        default=0,
        help="SCHED_FIFO priority for sim_arm, policy_bridge and the peer timer (0: off)",
    )
    ap.add_argument(
        "--pin",
        action="store_true",
        help="sim_arm on the first CPU, policy_bridge and the peer timer on the last",
    )
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args(argv)
    policy = args.policy or dds.default_policy_path()
    if policy is None:
        raise SystemExit("no shipped policy file: pass --policy X.pt (from `manip-rl export`)")
    policy = str(policy)
    results: dict = {"policy": policy, "trigger": args.trigger, "rt_priority": args.rt_priority,
                     "pin": args.pin}  # fmt: skip
    from manip_rl.demo import pinned_cpus

    pins = pinned_cpus(args.pin)  # SimSession's sim_cpus / bridge_cpus; {} without --pin
    peer_cpu = pins.get("bridge_cpus", "")
    with tempfile.TemporaryDirectory(prefix="ros_loop_") as work:
        if not args.skip_success:
            t = time.monotonic()
            inproc = in_process_success(policy, args.inproc_episodes, args.randomization, 10_000)
            ros, loop = ros_success(
                policy, args.episodes, os.path.join(work, "success"), args.rt_priority, pins
            )
            results["success"] = {
                "in_process": inproc,
                "in_process_episodes": args.inproc_episodes,
                "ros2": ros,
                "ros2_episodes": args.episodes,
                "difference_points": 100 * (ros - inproc),
                "loop_25hz": loop,
                "wall_s": time.monotonic() - t,
            }
            print(
                f"success: in-process {inproc:.1%} ({args.inproc_episodes} ep), through ROS 2 "
                f"{ros:.1%} ({args.episodes} ep): {100 * (ros - inproc):+.1f} points"
            )
        for rate, seconds in ((100.0, args.seconds_100), (500.0, args.seconds_500)):
            peer = peer_timer(rate, min(seconds, 20.0), args.rt_priority, peer_cpu)
            loop = ros_timing(policy, rate, seconds, work, args.trigger, args.rt_priority, pins)
            ratio = loop.get("period_error_p99_ms", float("nan")) / peer["period_error_p99_ms"]
            results[f"{rate:g}hz"] = {"bridge": loop, "peer_timer": peer, "seconds": seconds,
                                      "p99_period_error_ratio_to_peer": ratio}  # fmt: skip
            print(
                f"{rate:g} Hz for {seconds:g} s: rate {loop.get('loop_rate_hz', float('nan')):.1f} "
                f"Hz, period error p99 {loop.get('period_error_p99_ms', float('nan')):.2f} ms "
                f"(bare rclpy timer {peer['period_error_p99_ms']:.2f} ms, x{ratio:.2f}, "
                f"{peer['overruns']} overruns in {min(seconds, 20.0):g} s); "
                f"latency p50 {loop['latency_p50_ms']:.2f} ms p99 {loop['latency_p99_ms']:.2f} "
                f"ms; inference p50 {loop['inference_p50_ms']:.2f} ms; overruns "
                f"{loop['overruns']:.0f}; holds {loop['holds']:.0f}"
            )
            print(
                f"  stall probes beside it (per CPU, sleeping 1 ms): {loop['probe_stalls']} "
                f"wakeups more than {1e3 / rate:g} ms late, worst {loop['probe_worst_ms']:.1f} ms; "
                f"{loop['overruns_at_probe_stall']} of the bridge's overruns fell within 10 ms "
                f"of one; overruns late by {loop['overrun_late_ms']} ms"
            )
    if args.out:
        atomic_write_text(args.out, json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
