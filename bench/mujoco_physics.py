"""Benchmark: the tasks' physics across MuJoCo releases, on the scripted controllers' episodes.

Each version runs the same scripted Push and PickPlace episodes (randomized, the same seeds) in
a process of its own: this venv's MuJoCo, and each release named with ``--versions``, installed
once with ``pip install --target bench/.mujoco/<version> --no-deps`` (``mujoco-core`` for 4.x,
``mujoco`` before) and put first on that process's path. The first version listed is the
reference; the others are compared with it step by step.

    python bench/mujoco_physics.py --versions 3.11.0 3.13.0 3.14.0 4.0.1 --episodes 6

Why (2026-12-02): PandaPush with the shipped PPO settings learns more slowly on mujoco 4.0.0
than it did on 3.11.0 (README, Known gaps). This bench shows where the physics changed: how far
each version's joint and cube positions drift from the reference's, and how many episodes end
with MuJoCo's divergence guard (``info["physics_unstable"]``) or launch the cube (faster than
2 m/s over a step: a contact blow-up that MuJoCo's guard does not catch).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from manip_rl.fileio import atomic_write_text

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.path.join(HERE, ".mujoco")
TASKS = ("PandaPush", "PandaPickPlace")
CUBE = slice(9, 12)  # the cube's position in qpos (after 7 arm and 2 finger joints)
LAUNCH_M = 0.08  # m the cube moves in one 40 ms step (2 m/s): a push never does, a blow-up does


def task_episodes(task: str, episodes: int, seed: int) -> tuple[list, list, list]:
    """``task``'s scripted episodes: each one's qpos per step, success and instability."""
    import gymnasium as gym

    import manip_rl  # noqa: F401  (registers the envs)
    from manip_rl.envs import registry
    from manip_rl.episodes import run_episodes

    env = gym.make(registry.get(task).dense_env_id, action_mode="ee_delta", randomization="default")
    controller = registry.scripted_controller(env)
    steps: dict[int, list] = {}
    done = run_episodes(
        [env], lambda obs: [controller(obs[0])], episodes, seed,
        on_step=lambda i, e: steps.setdefault(i, []).append(e.unwrapped.data.qpos.copy()),
    )  # fmt: skip
    length = env.spec.max_episode_steps
    env.close()
    # An episode ended early by the divergence guard is padded with its last state.
    qpos = [np.array(steps[ep.index] + [steps[ep.index][-1]] * (length - ep.length)) for ep in done]
    success = [float(ep.success) for ep in done]
    unstable = [bool(ep.info.get("physics_unstable", False)) for ep in done]
    return qpos, success, unstable


def worker(out: str, episodes: int, seed: int) -> None:
    """Play the scripted episodes of every task and save their qpos, successes and instabilities."""
    import mujoco

    parts = [task_episodes(task, episodes, seed) for task in TASKS]
    qpos, success, unstable = ([x for part in parts for x in part[k]] for k in range(3))
    np.savez(out, qpos=np.array(qpos), success=np.array(success), unstable=np.array(unstable),
             version=mujoco.__version__)  # fmt: skip


def install(version: str) -> str:
    """The folder holding ``version``'s Python package (installed there on first use)."""
    target = os.path.join(CACHE, version)
    if not os.path.isdir(os.path.join(target, "mujoco")):
        package = "mujoco-core" if int(version.split(".")[0]) >= 4 else "mujoco"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", target,
             f"{package}=={version}"],
            check=True,
        )  # fmt: skip
    return target


def run_version(version: str | None, episodes: int, seed: int) -> dict:
    env = dict(os.environ)
    if version is not None:
        env["PYTHONPATH"] = os.pathsep.join([install(version), env.get("PYTHONPATH", "")])
    out = os.path.join(CACHE, f"run-{version or 'venv'}.npz")
    os.makedirs(CACHE, exist_ok=True)
    subprocess.run(
        [sys.executable, __file__, "--worker", out, "--episodes", str(episodes),
         "--seed", str(seed)],
        check=True, env=env,
    )  # fmt: skip
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--versions", nargs="+", default=["3.11.0", "3.13.0", "3.14.0"],
                   help="MuJoCo releases from PyPI; the first is the reference")  # fmt: skip
    p.add_argument("--episodes", type=int, default=6, help="per task")
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.episodes, args.seed)
        return 0
    runs = {v: run_version(v, args.episodes, args.seed) for v in args.versions}
    venv = run_version(None, args.episodes, args.seed)
    runs[f"{venv['version']} (this venv)"] = venv
    ref_name = args.versions[0]
    ref = runs[ref_name]
    n = args.episodes
    results = {}
    print(f"reference: mujoco {ref_name}; {n} scripted episodes each of {', '.join(TASKS)}")
    for name, r in runs.items():
        d = np.abs(r["qpos"] - ref["qpos"])
        launch = np.linalg.norm(np.diff(r["qpos"][:, :, CUBE], axis=1), axis=2).max(axis=1)
        row = {}
        for i, task in enumerate(TASKS):
            part = slice(i * n, (i + 1) * n)
            row[task] = {
                "arm_max_rad": float(d[part, :, :7].max()),
                "cube_max_m": float(d[part, :, CUBE].max()),
                "successes": int(r["success"][part].sum()),
                "unstable_episodes": int(r["unstable"][part].sum()),
                "cube_launches": int((launch[part] > LAUNCH_M).sum()),
            }
            print(f"mujoco {name:20s} {task:15s} |dq| arm {row[task]['arm_max_rad']:.2e} rad, "
                  f"|dx| cube {row[task]['cube_max_m']:.2e} m, success {row[task]['successes']}/"
                  f"{n}, unstable {row[task]['unstable_episodes']}, cube launched "
                  f"{row[task]['cube_launches']}")  # fmt: skip
        results[name] = row
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
