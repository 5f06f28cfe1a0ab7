"""PPO training throughput (env steps/s, collection + updates) on PandaPush, against SB3 PPO on
gymnasium-robotics FetchReachDense-v4 (4 envs, one process), measured in one run. The peer runs
in ``bench/.peer-venv`` (bench/peer.py: its Fetch envs need mujoco < 3.12), with the product's
SB3, torch, Gymnasium and NumPy versions.

Each configuration trains for a fixed number of steps after a warm-up rollout (process start-up
and imports excluded); figures are the median of interleaved repeats because the machine is
shared. The manip_rl runs use the shipped PandaPush PPO configuration (randomization on) with each
vector env: ``chunked`` (the default: one worker process per CPU, several envs each), SB3's
``SubprocVecEnv`` (a process per env) and one process.

    python bench/train_throughput.py                 # about 3 minutes
    python bench/train_throughput.py --steps 40000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

TARGET = 1500  # env steps/s, PPO on PandaPush, 2 cores (issue 3)


def _timed_learn(model, steps: int, callback=None) -> float:
    """Steps/s of ``model.learn`` after one warm-up rollout and update."""
    model.learn(model.n_steps * model.n_envs, callback=callback)
    t0, n0 = time.perf_counter(), model.num_timesteps
    model.learn(steps, reset_num_timesteps=False, callback=callback)
    return (model.num_timesteps - n0) / (time.perf_counter() - t0)


def manip_rl_rate(steps: int, n_envs: int, vec_env: str, update_threads="auto") -> float:
    import torch

    from manip_rl.policies import config as cfgmod
    from manip_rl.policies.callbacks import UpdateThreads
    from manip_rl.policies.train import make_vec_env

    torch.set_num_threads(1)
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecNormalize

    cfg = cfgmod.load_config("PandaPush", "ppo")
    cfg.update(n_envs=n_envs, vec_env=vec_env, update_threads=update_threads)
    cfg["randomization"] = cfgmod.randomization_dict(cfg)
    venv = VecNormalize(make_vec_env(cfg, 0), **cfg["normalize"])
    model = PPO("MlpPolicy", venv, policy_kwargs=cfgmod.policy_kwargs(cfg), device="cpu",
                **cfg["hyperparams"])  # fmt: skip
    try:
        # As `manip-rl train`: torch threads by phase (update_threads, default all cores).
        return _timed_learn(model, steps, UpdateThreads.for_config(cfg))
    finally:
        venv.close()


def fetch_rate(steps: int) -> float:
    """SB3 PPO defaults on FetchReachDense-v4, 4 envs in one process (the issue's reference),
    measured in the peer environment."""
    from peer import peer_measure  # bench/peer.py, beside this script

    return float(peer_measure(__file__, str(steps)))


def _fetch_rate_here(steps: int) -> float:
    """fetch_rate's body, run inside the peer environment."""
    import gymnasium as gym
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
        venv = make_vec_env("FetchReachDense-v4", n_envs=4)
    model = PPO("MultiInputPolicy", venv, n_steps=512, device="cpu")
    try:
        return _timed_learn(model, steps)
    finally:
        venv.close()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--peer":
        print(json.dumps(_fetch_rate_here(int(sys.argv[2]))))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20000, help="timed steps per measurement")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    from peer import peer_python

    peer_python()  # made now (first run: a few minutes), not inside a measurement
    configs = {
        "PandaPush PPO, 8 envs chunked, 2 workers (shipped config)": lambda: manip_rl_rate(
            args.steps, 8, "chunked"
        ),
        "PandaPush PPO, 8 envs chunked, updates on 1 thread": lambda: manip_rl_rate(
            args.steps, 8, "chunked", 1
        ),
        "PandaPush PPO, 8 envs SB3 SubprocVecEnv": lambda: manip_rl_rate(args.steps, 8, "subproc"),
        "PandaPush PPO, 4 envs subproc": lambda: manip_rl_rate(args.steps, 4, "subproc"),
        "PandaPush PPO, 8 envs one process": lambda: manip_rl_rate(args.steps, 8, "dummy"),
        "FetchReachDense-v4 SB3 PPO, 4 envs one process": lambda: fetch_rate(args.steps),
    }
    rates: dict[str, list[float]] = {k: [] for k in configs}
    for r in range(args.repeats):  # interleaved, so load changes hit every configuration alike
        for name, fn in configs.items():
            rates[name].append(fn())
            print(f"  repeat {r + 1}: {name}: {rates[name][-1]:.0f} steps/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    peer = med["FetchReachDense-v4 SB3 PPO, 4 envs one process"]
    print("\n| configuration | env steps/s (median) | × FetchReachDense PPO |")
    print("|---|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.0f} | {v / peer:.2f} |")
    best = max(v for k, v in med.items() if k.startswith("PandaPush"))
    print(f"\nbest PandaPush PPO throughput {best:.0f} steps/s; target >= {TARGET} "
          f"({'met' if best >= TARGET else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
