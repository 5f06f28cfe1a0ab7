"""Batched MuJoCo Warp env throughput against the CPU env, measured in one run.

On Warp's CPU device (always): env steps/s of ``gym.make_vec(ID, num_envs=N,
vectorization_mode="vector_entry_point", backend="warp", device="cpu")`` with randomization on,
for each N of ``--worlds``, against one CPU env (``gym.make(ID)``, randomization on) measured
just before it; the ratio is batched / CPU.

On a GPU (``--gpu``, only where a CUDA device exists): for each N, raw physics steps/s
(``mujoco_warp.step`` on the batched model, no env), env steps/s with randomization, and PPO
training steps/s (``manip-rl train --backend warp``'s loop: rollout and update, env steps
counted). Not run where no GPU is lent (docs/warp.md lists these figures as unmeasured).

    python bench/warp_throughput.py                          # CPU: N = 1, 4, 16, 64
    python bench/warp_throughput.py --task PandaPush --worlds 1,16,256
    python bench/warp_throughput.py --gpu --worlds 1024,4096,16384
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import manip_rl  # noqa: E402,F401
from manip_rl.envs import registry  # noqa: E402


def cpu_env_rate(env_id: str, seconds: float) -> float:
    """Env steps/s of one CPU env, randomization on, random actions, resets at episode ends."""
    env = gym.make(env_id, randomization="default")
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, env.action_space.shape))
        n += 1
        if term or trunc:
            env.reset()
    rate = n / (time.perf_counter() - t0)
    env.close()
    return rate


def warp_env_rate(env_id: str, n: int, device: str, steps: int) -> tuple[float, float]:
    """(env steps/s over ``steps`` batched steps after a warm-up step, seconds to make the env and
    take its first step: the kernel compilation when the cache is cold)."""
    t0 = time.perf_counter()
    env = gym.make_vec(
        env_id, num_envs=n, vectorization_mode="vector_entry_point", backend="warp",
        device=device, randomization="default",
    )  # fmt: skip
    env.reset(seed=0)
    a = 2 * torch.rand((n, env.single_action_space.shape[0]), device=device) - 1
    env.step(a)
    first = time.perf_counter() - t0
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(2 * torch.rand_like(a) - 1)
    _sync(device)
    rate = n * steps / (time.perf_counter() - t0)
    env.close()
    return rate, first


def physics_rate(task: str, n: int, device: str, steps: int) -> float:
    """Raw ``mujoco_warp.step`` calls x worlds per second on the batched scene (no env): physics
    substeps of 2.67 ms; an env step is 15 of them."""
    import mujoco_warp as mjw
    import warp as wp

    from manip_rl.envs.warp.batch import BatchedScene

    scene = BatchedScene(task, n, device, randomized=True)
    with wp.ScopedDevice(device):
        mjw.step(scene.model, scene.data)
        wp.synchronize_device(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            mjw.step(scene.model, scene.data)
        wp.synchronize_device(device)
    return n * steps / (time.perf_counter() - t0)


def training_rate(task: str, n: int, device: str, iterations: int) -> float:
    """Env steps/s of ``manip-rl train --backend warp`` (rollout + PPO update), no evaluation."""
    from manip_rl.policies import config as cfgmod
    from manip_rl.policies import rundir
    from manip_rl.policies.train import train

    cfg = cfgmod.load_config(task, "ppo")
    n_steps = 24
    cfg.update(backend="warp", device=device, n_envs=n, total_timesteps=iterations * n * n_steps)
    cfg["hyperparams"].update(n_steps=n_steps, batch_size=max(1, n * n_steps // 4))
    cfg["eval"] = {"freq": 0, "episodes": 1}
    cfg["checkpoint_freq"] = 10**12
    cfg = cfgmod.validate(cfg)
    with tempfile.TemporaryDirectory() as path:
        rundir.write_config(path, cfg)
        t0 = time.perf_counter()
        out = train(path, cfg, progress=False)
        return out["steps"] / (time.perf_counter() - t0)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--task", default="PandaReach")
    p.add_argument("--worlds", default="1,4,16,64", help="comma-separated world counts")
    p.add_argument("--steps", type=int, default=10, help="batched env steps per measurement")
    p.add_argument("--seconds", type=float, default=3.0, help="CPU env measurement length")
    p.add_argument("--gpu", action="store_true", help="also measure on CUDA (needs a GPU)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    env_id = registry.get(args.task).dense_env_id
    worlds = [int(w) for w in args.worlds.split(",")]
    rows = []
    print(f"{args.task}, randomization on; Warp CPU device vs one CPU env")
    print(
        f"{'worlds':>7} {'warp steps/s':>13} {'cpu env steps/s':>16} {'ratio':>7} {'first step s':>13}"
    )
    for n in worlds:
        cpu = cpu_env_rate(env_id, args.seconds)
        warp, first = warp_env_rate(env_id, n, "cpu", args.steps)
        rows.append({"device": "cpu", "worlds": n, "warp_env_steps_s": warp,
                     "cpu_env_steps_s": cpu, "ratio": warp / cpu, "first_step_s": first})  # fmt: skip
        print(f"{n:>7} {warp:>13.0f} {cpu:>16.0f} {warp / cpu:>7.2f} {first:>13.1f}", flush=True)
    if args.gpu:
        if not torch.cuda.is_available():
            print("--gpu: no CUDA device here; GPU figures not measured", file=sys.stderr)
            return 2
        print(f"\n{args.task} on cuda: raw physics, env with randomization, PPO training")
        for n in worlds:
            phys = physics_rate(args.task, n, "cuda", 10 * args.steps)
            env, _ = warp_env_rate(env_id, n, "cuda", args.steps)
            ppo = training_rate(args.task, n, "cuda", 3)
            rows.append({"device": "cuda", "worlds": n, "physics_steps_s": phys,
                         "env_steps_s": env, "train_steps_s": ppo})  # fmt: skip
            print(
                f"{n:>7} physics substeps {phys:>12.0f}/s  env {env:>10.0f}/s  train {ppo:>10.0f}/s"
            )
    if args.json:
        from manip_rl.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
