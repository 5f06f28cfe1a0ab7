"""Benchmark: the shipped Push and PickPlace policies on an emulated FR3 through the trajectory
path, over ROS 2, against an in-process evaluation on the same interpolation and limits.

For each policy: N episodes served by ``policy_bridge`` (``robot: fr3``: joints matched by role,
the tighter of the Panda's and FR3's limits, stamped JointTrajectory output) to
``sim_arm --robot fr3`` (1 kHz joint_trajectory_controller-like interpolation, Franka's reflex),
counting the reflexes; and N episodes of the same env in-process with ``trajectory_robot="fr3"``
(the bridge's safety filter and the same interpolator and reflex, no ROS), with the bridge
parameters of launch/config/sim.yaml. Targets (issue 16): 0 reflexes, success within 5 points.

    nice python bench/fr3_trajectory.py --episodes 20 --json fr3.json
    python bench/fr3_trajectory.py --tasks push --policy push=RUN/policy.pt   # a file of your own
    python bench/fr3_trajectory.py --scripted --episodes 20   # the task itself, no policy

``--scripted`` runs each task's scripted controller in-process on the env's default servos, on
the FR3 path (same filter, interpolation, reflex and sim.yaml parameters) in the task's own
episode length, and in the FR3 training setup (``manip_rl/configs/tasks/<task>/fr3.yaml``'s
``env_kwargs``: the bridge's trajectory defaults and a longer episode), with the tracking of
each: how much of each step's commanded joint motion the FR3 path delivers within the step. It
says whether a task is solvable in its episode under the FR3's limits, whatever the policy.

It also prints the machine's load average: the ROS 2 reflex count depends on how late commands
reach sim_arm, which on a shared machine is set by the other load.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import yaml

from manip_rl.episodes import run_episodes
from manip_rl.export.policy_file import load_policy
from manip_rl.fileio import atomic_write_text
from manip_rl.ros_bridge import bridge_params, dds
from manip_rl.stats import wilson_interval

POLICIES = {
    "push": dds.PRETRAINED_DIR / "panda_push.pt",
    "pick_place": dds.PRETRAINED_DIR / "panda_pick_place.pt",
}


def sim_bridge_params() -> dict:
    """policy_bridge's parameters from launch/config/sim.yaml (those the in-process path uses)."""
    section = yaml.safe_load(dds.SIM_PARAMS.read_text())["policy_bridge"]["ros__parameters"]
    return {k: v for k, v in section.items() if k in bridge_params.PARAMETERS and k != "policy"}


def trajectory_params() -> dict:
    """sim.yaml's bridge parameters as the env's ``trajectory_params`` (output and robot are the
    path's own)."""
    return {k: v for k, v in sim_bridge_params().items() if k not in ("output", "robot")}


def in_process(policy_path: str, episodes: int, seed: int) -> dict:
    policy = load_policy(policy_path)
    params = trajectory_params()
    env = policy.make_env(randomization="default", trajectory_robot="fr3", trajectory_params=params)
    out = _tally(run_episodes([env], lambda obs: [policy.act(obs[0])], episodes, seed))
    env.close()
    return out


def _tally(done: list) -> dict:
    """Successes, and the reflexes since the env was made (its last episode's count)."""
    wins = sum(ep.success for ep in done)
    return {
        "episodes": len(done),
        "successes": wins,
        "reflexes": int(done[-1].info.get("reflexes", 0)),
    }


def fr3_env_kwargs(task: str) -> dict:
    """The ``env_kwargs`` of ``manip_rl/configs/tasks/<task>/fr3.yaml``, through the training
    config's own loader: the FR3 training setup (the trajectory path with the FR3's limits, and
    the episode length the task needs there)."""
    from manip_rl.envs import registry
    from manip_rl.policies import config as cfgmod

    path = os.path.join(os.path.dirname(registry.get(task).train_path), "fr3.yaml")
    return cfgmod.load_config(task, "ppo", path)["env_kwargs"]


def scripted(task: str, episodes: int, seed: int, env_kwargs: dict) -> dict:
    """The task's scripted controller in-process, randomized, in the env made with
    ``env_kwargs``: successes, reflexes and, on a trajectory path, the median fraction of each
    step's commanded joint motion delivered by its end."""
    import gymnasium as gym
    import numpy as np

    from manip_rl.envs import registry

    spec = registry.get(task)
    env = gym.make(spec.dense_env_id, action_mode="ee_delta", randomization="default", **env_kwargs)
    controller = registry.scripted_controller(env)
    path = env.unwrapped.trajectory_path
    delivered: list[float] = []
    if path is not None:  # record each step's target and where the command stood at its end
        command, positions = path.command, path.positions
        step: dict = {}

        def record_command(targets, measured, t):
            step.update(target=np.array(targets), start=np.array(measured))
            command(targets, measured, t)

        def record_positions(times):
            out = positions(times)
            asked = np.abs(step["target"] - step["start"]).max()
            if asked > 1e-3:
                delivered.append(1.0 - np.abs(step["target"] - out[-1]).max() / asked)
            return out

        path.command, path.positions = record_command, record_positions
    out = _tally(run_episodes([env], lambda obs: [controller(obs[0])], episodes, seed))
    out["episode_steps"] = int(env.spec.max_episode_steps)
    env.close()
    if delivered:
        out["delivered_median"] = round(float(np.median(delivered)), 3)
    return out


def over_ros(policy_path: str, episodes: int, sim_rt_priority: int = 20) -> dict:
    from manip_rl.ros_bridge.session import SimSession

    metadata = load_policy(policy_path).metadata
    steps = _episode_steps(metadata["env_id"], metadata.get("env_kwargs"))
    period = float(metadata["control_period_s"])
    wins = 0
    with SimSession(
        policy_path,
        env_id=metadata["env_id"],
        # Joint states at 100 Hz and no keep-warm inference per state: on a loaded 2-core machine
        # every spare cycle shortens how late a trajectory reaches sim_arm (a command later than
        # trajectory_timing_tolerance + actuator_latency past its stamp can trip the reflex).
        bridge_params=["-p", "robot:=fr3", "-p", "keep_warm:=false"],
        sim_params=["-p", "robot:=fr3", "-p", "joint_state_rate:=100.0"],
        # The emulated robot real-time, as a real arm's controller; the bridge as it is.
        sim_rt_priority=sim_rt_priority,
    ) as session:
        for _ in range(episodes):
            wins += session.run_episode(steps * period)
        session.spin(0.3)
        reflexes = session.reflexes
    counters = session.bridge_stats().get("counters", {})  # written when the bridge stops
    # Each reflex's line: the limit, the joint, and how late the last trajectory started.
    reflex_lines = [line for line in session.log("sim_arm").splitlines() if "reflex:" in line]
    session.cleanup()
    return {
        "episodes": episodes,
        "successes": wins,
        "reflexes": reflexes,
        "sim_rt_priority": sim_rt_priority,
        # Plans the bridge found late before sending: planned again, or (twice late) not sent.
        "late_plans": int(counters.get("late_plans", 0)),
        "late_plans_dropped": int(counters.get("late_plans_dropped", 0)),
        "reflex_log": reflex_lines[:10],
    }


def _episode_steps(env_id: str, env_kwargs: dict | None = None) -> int:
    from manip_rl.demo import episode_steps

    return episode_steps(env_id, env_kwargs)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--tasks", nargs="+", default=list(POLICIES), choices=list(POLICIES))
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--policy", action="append", default=[], metavar="TASK=FILE",
                   help="serve FILE for TASK instead of the shipped file, e.g. "
                        "push=runs/push_fr3/policy.pt (a file trained with configs/tasks/push/fr3.yaml); "
                        "repeatable")  # fmt: skip
    p.add_argument("--sim-rt-priority", type=int, default=20, metavar="N",
                   help="sim_arm under SCHED_FIFO priority N, as a robot's controller runs "
                        "(0: normal scheduling); policy_bridge keeps normal scheduling")  # fmt: skip
    p.add_argument("--scripted", action="store_true",
                   help="the scripted controllers on the default servos and the FR3 path instead")  # fmt: skip
    args = p.parse_args()
    if args.scripted and args.policy:
        p.error("--policy serves a file; --scripted runs the tasks' scripted controllers: pick one")
    policies = dict(POLICIES)
    for item in args.policy:
        task, sep, path = item.partition("=")
        if not sep or task not in POLICIES or not path:
            p.error(f"--policy {item!r}: expected TASK=FILE with TASK one of {', '.join(POLICIES)}")
        if not os.path.isfile(path):
            p.error(f"--policy {item!r}: no file {path!r}; export a run with `manip-rl export RUN`")
        policies[task] = path
    results = {}
    if args.scripted:
        names = {"push": "PandaPush", "pick_place": "PandaPickPlace"}
        for task in args.tasks:
            sim_path = {"trajectory_robot": "fr3", "trajectory_params": trajectory_params()}
            setups = {
                "default_servos": {},
                "fr3_path": sim_path,
                "fr3_yaml": fr3_env_kwargs(names[task]),
            }
            results[task] = {
                name: scripted(names[task], args.episodes, args.seed, kwargs)
                for name, kwargs in setups.items()
            }
            for name, r in results[task].items():
                extra = (
                    f", delivered {r['delivered_median']:.0%}" if "delivered_median" in r else ""
                )
                print(f"{task:10s} scripted, {name:14s} ({r['episode_steps']} steps): success "
                      f"{r['successes']}/{r['episodes']}, reflexes {r['reflexes']}{extra}",
                      flush=True)  # fmt: skip
        if args.json:
            atomic_write_text(args.json, json.dumps(results, indent=1))
        return 0
    for task in args.tasks:
        path = str(policies[task])
        t0 = time.monotonic()
        local = in_process(path, args.episodes, args.seed)
        ros = over_ros(path, args.episodes, args.sim_rt_priority)
        load = os.getloadavg()[0]
        results[task] = {
            "policy": path,
            "in_process": local,
            "ros": ros,
            "seconds": time.monotonic() - t0,
            "load_average_1min": load,
        }
        print(f"{task:10s} load average (1 min) after the run: {load:.1f}", flush=True)
        for name, r in (("in-process", local), ("ROS 2 / sim_arm fr3", ros)):
            lo, hi = wilson_interval(r["successes"], r["episodes"])
            print(
                f"{task:10s} {name:20s}: success {r['successes']}/{r['episodes']} "
                f"({lo:.0%}-{hi:.0%}), reflexes {r['reflexes']}"
                + (
                    f", late plans {r['late_plans']} ({r['late_plans_dropped']} not sent)"
                    if "late_plans" in r
                    else ""
                ),  # fmt: skip
                flush=True,
            )
        for line in ros["reflex_log"]:
            print(f"{task:10s} sim_arm: {line}", flush=True)
        gap = (ros["successes"] - local["successes"]) / args.episodes
        print(f"{task:10s} success gap (ROS - in-process): {gap * 100:+.0f} points", flush=True)
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
