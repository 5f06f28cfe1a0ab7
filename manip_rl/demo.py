"""``manip-rl demo``: the main job end to end, on embedded defaults.

A trained policy file (the shipped PandaReach policy, or ``--policy``) is served by
``policy_bridge`` to the simulated Panda ``sim_arm`` (real time, domain randomization, sensor and
actuator latency), each in its own process, over ROS 2 (DDS on localhost, a domain of its own).
The demo resets the arm, enables the bridge for one episode, reads the task's success, N times,
then prints the success rate and the control loop's rate and latency statistics.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time

from manip_rl.fileio import atomic_write_text
from manip_rl.stats import wilson_interval


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy",
        help="policy file from `manip-rl export`, or a run directory to export first "
        "(default: the shipped PandaReach policy)",
    )
    p.add_argument("--episodes", type=int, default=10, help="episodes through ROS 2 (default 10)")
    p.add_argument(
        "--robot",
        choices=("panda", "fr3"),
        help="robot profile of both nodes (fr3: trajectory output, franka_ros2 names, reflex)",
    )
    p.add_argument(
        "--params-file", help="parameter YAML of both nodes (default launch/config/sim.yaml)"
    )
    p.add_argument(
        "--bridge-param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="override a policy_bridge parameter, e.g. output:=trajectory (repeatable)",
    )
    p.add_argument(
        "--sim-param",
        action="append",
        default=[],
        metavar="NAME:=VALUE",
        help="override a sim_arm parameter, e.g. sensor_latency:=0.02 (repeatable)",
    )
    p.add_argument(
        "--rt-priority",
        type=int,
        default=0,
        metavar="N",
        help="run both nodes under SCHED_FIFO priority N (needs the permission; default off)",
    )
    p.add_argument(
        "--pin",
        action="store_true",
        help="pin sim_arm to the first CPU and policy_bridge to the last (needs 2 or more)",
    )
    p.add_argument("--json", help="also write the results to this JSON file")


def pinned_cpus(pin: bool) -> dict[str, str]:
    """SimSession's CPU lists for ``--pin``: sim_arm on the first CPU this process may use,
    policy_bridge on the last (the bridge's caches then stay its own)."""
    if not pin:
        return {}
    import os

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit(f"--pin needs 2 or more CPUs; this process may run on {cpus}")
    return {"sim_cpus": str(cpus[0]), "bridge_cpus": str(cpus[-1])}


def episode_steps(env_id: str, env_kwargs: dict | None = None) -> int:
    """Control steps per episode of a registered task (its time limit), or the
    ``max_episode_steps`` a policy file's ``env_kwargs`` set."""
    import gymnasium as gym

    import manip_rl  # noqa: F401  (registers the envs)

    if (env_kwargs or {}).get("max_episode_steps"):
        return int(env_kwargs["max_episode_steps"])
    spec = gym.spec(env_id)
    if not spec.max_episode_steps:
        raise ValueError(f"{env_id} has no time limit; cannot size an episode")
    return int(spec.max_episode_steps)


def resolve_policy(path: str | None, workdir: str) -> str:
    """The policy file to serve: ``path`` (a policy file, or a run directory, exported here on
    the fly) or the shipped PandaReach policy."""
    import os

    from manip_rl.ros_bridge import dds

    if path and os.path.isdir(path):
        from manip_rl.export import export_policy

        out = os.path.join(workdir, "policy.pt")
        print(f"exporting run {path} -> {out}")
        export_policy(path, out)
        return out
    if path:
        return path
    shipped = dds.default_policy_path()
    if shipped is None:
        raise SystemExit(
            "manip-rl demo: this build ships no policy file (manip_rl/policies/pretrained/*.pt). "
            "Train and export one: `manip-rl train --task PandaReach` then "
            "`manip-rl export runs/<run> --out reach.pt`, and run `manip-rl demo --policy reach.pt`"
        )
    return str(shipped)


def _params(pairs: list[str], flag: str) -> list[str]:
    out = []
    for pair in pairs:
        if ":=" not in pair:
            raise SystemExit(f"manip-rl demo: {flag} {pair!r}: expected NAME:=VALUE")
        out += ["-p", pair]
    return out


def run(args: argparse.Namespace) -> int:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        raise SystemExit(
            "manip-rl demo runs the policy over ROS 2 and needs rclpy: pip install -e .[ros]"
        ) from None
    from manip_rl.export import ExportError, PolicyFileError, read_metadata
    from manip_rl.ros_bridge.session import SessionError, SimSession, summarize_stats

    if args.episodes < 1:
        raise SystemExit(f"manip-rl demo: --episodes must be >= 1, got {args.episodes}")
    workdir = tempfile.mkdtemp(prefix="manip_rl_demo_")
    try:
        policy = resolve_policy(args.policy, workdir)
        metadata = read_metadata(policy)
    except (PolicyFileError, ExportError, FileNotFoundError, ValueError) as e:
        shutil.rmtree(workdir, ignore_errors=True)
        raise SystemExit(f"manip-rl demo: {e}") from None
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    env_id, period = metadata["env_id"], float(metadata["control_period_s"])
    steps = episode_steps(env_id, metadata.get("env_kwargs"))
    print(
        f"policy {policy}: {metadata['task']} ({env_id}), {1 / period:g} Hz, "
        f"{steps} steps = {steps * period:g} s per episode"
    )
    print("starting sim_arm and policy_bridge (separate processes, ROS 2 on localhost) ...")
    results = []
    robot = [f"robot:={args.robot}"] if args.robot else []
    t_start = time.monotonic()
    session = SimSession(
        policy,
        env_id=env_id,
        params_file=args.params_file,
        bridge_params=_params(robot + args.bridge_param, "--bridge-param"),
        sim_params=_params(robot + args.sim_param, "--sim-param"),
        rt_priority=args.rt_priority,
        **pinned_cpus(args.pin),
    )
    try:
        with session:
            print(f"ready on ROS_DOMAIN_ID={session.domain_id}; running {args.episodes} episodes")
            for i in range(args.episodes):
                ok = session.run_episode(steps * period)
                results.append(ok)
                print(f"  episode {i + 1:3d}/{args.episodes}: {'success' if ok else 'failure'}")
            session.spin(0.3)  # the last reflex count
            reflexes = session.reflexes
        stats = summarize_stats(session.bridge_stats())
    except SessionError as e:
        print(f"manip-rl demo: {e}", file=sys.stderr)
        return 1
    finally:
        session.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)

    wins = sum(results)
    lo, hi = wilson_interval(wins, len(results))
    print()
    print(
        f"success through ROS 2: {wins}/{len(results)} = {wins / len(results):.0%} "
        f"(95% CI {lo:.0%}-{hi:.0%})"
    )
    print(
        f"control loop: {stats.get('loop_rate_hz', float('nan')):.2f} Hz "
        f"(target {stats['control_rate_hz']:g}); period error p50 "
        f"{stats.get('period_error_p50_ms', float('nan')):.2f} ms, p99 "
        f"{stats.get('period_error_p99_ms', float('nan')):.2f} ms; overruns "
        f"{stats['overruns']:.0f}"
    )
    print(
        f"JointState -> command latency: p50 {stats['latency_p50_ms']:.2f} ms, p99 "
        f"{stats['latency_p99_ms']:.2f} ms; policy inference p50 "
        f"{stats['inference_p50_ms']:.2f} ms, p99 {stats['inference_p99_ms']:.2f} ms"
    )
    print(f"Franka reflexes of the emulated arm: {reflexes}")
    print(f"({stats['commands']:.0f} commands, {time.monotonic() - t_start:.0f} s in all)")
    if args.json:
        out = {
            "policy": policy,
            "env_id": env_id,
            "episodes": len(results),
            "successes": wins,
            "success_rate": wins / len(results),
            "success_ci95": [lo, hi],
            "reflexes": reflexes,
            "per_episode": results,
            "loop": stats,
        }
        atomic_write_text(args.json, json.dumps(out, indent=1))
    return 0
