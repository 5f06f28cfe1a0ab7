"""Batch-1 inference latency of one policy three ways, in one run, on the same observations, one
thread: SB3 ``predict`` (the peer), the exported TorchScript file (``load_policy(...).act``) and
ONNX Runtime (the ``.onnx`` export through ``load_policy(...).act``). Prints p50/p99 in
microseconds and each one's speed-up over SB3 ``predict``.

    python bench/inference_latency.py                  # fresh 2x256 PPO reach policy, VecNormalize
    python bench/inference_latency.py --run runs/reach # a trained run instead
    python bench/inference_latency.py --obs dict       # MultiInputPolicy (Dict observation)

Targets (issue 4): TorchScript p50 >= 6x faster than SB3 predict and p99 <= 100 us for a 2x256 MLP;
ONNX Runtime p50 >= 15x faster than SB3 predict. The methods take turns in short blocks, so a
burst of load on this shared machine hits all of them alike; the garbage collector is off while
timing (as in timeit).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

import numpy as np
import torch


def _fresh_source(obs_kind: str, seed: int):
    """A 2x256 PPO policy on PandaReach with VecNormalize statistics from real observations
    (latency does not depend on what the weights learned)."""
    import gymnasium as gym
    from gymnasium.wrappers import FlattenObservation
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    import manip_rl  # noqa: F401  (registers the envs)
    from manip_rl.export import PolicySource

    env_id = "manip_rl/PandaReach-v0"
    wrapper = FlattenObservation if obs_kind == "flat" else None
    venv = VecNormalize(make_vec_env(env_id, n_envs=1, seed=seed, wrapper_class=wrapper))
    venv.reset()
    for _ in range(200):  # update the running statistics
        venv.step(np.array([venv.action_space.sample()]))
    venv.training = False
    policy = "MlpPolicy" if obs_kind == "flat" else "MultiInputPolicy"
    model = PPO(policy, venv, seed=seed, device="cpu", policy_kwargs={"net_arch": [256, 256]})
    del gym
    return PolicySource(model=model, vecnormalize=venv, env_id=env_id, algorithm="ppo")


def _native_obs(source, flat: np.ndarray):
    """The observation as the SB3 policy takes it (a dict for MultiInputPolicy), normalized."""
    from manip_rl.export import _dict_keys_and_sizes

    keys = _dict_keys_and_sizes(source.model.policy.observation_space)
    if keys is None:
        obs = flat
    else:
        obs, start = {}, 0
        for k, s in keys:
            obs[k] = flat[start : start + s]
            start += s
    return obs


def _measure(fns: dict, inputs: dict, rounds: int, block: int, warmup: int) -> dict:
    samples = {name: [] for name in fns}
    for name, fn in fns.items():
        for i in range(warmup):
            fn(inputs[name][i % len(inputs[name])])
    clock = time.perf_counter_ns
    gc.collect()
    gc.disable()  # as timeit does: a collection pause is not the method's latency
    try:
        _rounds(fns, inputs, rounds, block, samples, clock)
    finally:
        gc.enable()
    return {k: np.asarray(v, dtype=np.float64) / 1e3 for k, v in samples.items()}


def _rounds(fns: dict, inputs: dict, rounds: int, block: int, samples: dict, clock) -> None:
    for r in range(rounds):
        for name, fn in fns.items():
            xs, out = inputs[name], samples[name]
            n = len(xs)
            for i in range(block):
                x = xs[(r * block + i) % n]
                t0 = clock()
                fn(x)
                out.append(clock() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", default=None, help="run directory (default: a fresh 2x256 PPO policy)")
    p.add_argument(
        "--obs",
        choices=("flat", "dict"),
        default="flat",
        help="observation input of the fresh policy",
    )
    p.add_argument("--rounds", type=int, default=20, help="rounds of blocks per method")
    p.add_argument("--block", type=int, default=500, help="calls per method per round")
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    from manip_rl.export import collect_observations, export_policy, load_policy, source_from_run

    source = source_from_run(args.run) if args.run else _fresh_source(args.obs, args.seed)
    tmp = tempfile.mkdtemp(prefix="manip_rl_bench_")
    pt, onnx_path = os.path.join(tmp, "policy.pt"), os.path.join(tmp, "policy.onnx")
    export_policy(source, pt)
    export_policy(source, onnx_path, fmt="onnx")
    ts, ort = load_policy(pt), load_policy(onnx_path)

    flat = collect_observations(source.env_id, 1000, args.seed, source.action_mode)
    vn = source.vecnormalize
    native = [_native_obs(source, x) for x in flat]
    normalized = [vn.normalize_obs(o) if vn is not None else o for o in native]
    model = source.model

    def sb3_predict(obs):
        return model.predict(obs, deterministic=True)

    def sb3_normalize_predict(obs):
        return model.predict(vn.normalize_obs(obs) if vn is not None else obs, deterministic=True)

    fns = {
        "SB3 predict": sb3_predict,
        "SB3 normalize_obs + predict": sb3_normalize_predict,
        "TorchScript file (act)": ts.act,
        "ONNX Runtime (act)": ort.act,
    }
    inputs = {
        "SB3 predict": normalized,
        "SB3 normalize_obs + predict": native,
        "TorchScript file (act)": list(flat),
        "ONNX Runtime (act)": list(flat),
    }
    # Same observations, same answers: a check that the peers compute the same policy.
    ref = np.stack([sb3_predict(o)[0] for o in normalized[:200]])
    for name in ("TorchScript file (act)", "ONNX Runtime (act)"):
        got = np.stack([fns[name](x) for x in flat[:200]])
        diff = float(np.abs(got - ref).max())
        if diff > 1e-5:
            print(f"{name}: actions differ from SB3 by {diff:.2e}", file=sys.stderr)
            return 1

    t = _measure(fns, inputs, args.rounds, args.block, args.warmup)
    base = np.percentile(t["SB3 predict"], 50)
    obs_dim, act_dim = ts.obs_dim, ts.act_dim
    hidden = [
        m.out_features
        for m in source.model.policy.mlp_extractor.policy_net
        if isinstance(m, torch.nn.Linear)
    ]
    print(
        f"policy: {source.env_id}, obs {obs_dim} ({args.obs if not args.run else 'run'}) -> "
        f"MLP {'x'.join(map(str, hidden))} -> act {act_dim}, VecNormalize "
        f"{'on' if vn is not None else 'off'}; batch 1, 1 thread, "
        f"{args.rounds}x{args.block} calls per method; torch {torch.__version__}"
    )
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} (p99 needs an idle machine)")
    print(
        f"{'method':<30} {'p50 us':>9} {'p90 us':>9} {'p99 us':>9} "
        f"{'p50 speed-up vs SB3 predict':>29}"
    )
    for name, v in t.items():
        p50, p90, p99 = np.percentile(v, [50, 90, 99])
        print(f"{name:<30} {p50:9.1f} {p90:9.1f} {p99:9.1f} {base / p50:28.1f}x")
    ts50 = np.percentile(t["TorchScript file (act)"], 50)
    ts99 = np.percentile(t["TorchScript file (act)"], 99)
    ort50 = np.percentile(t["ONNX Runtime (act)"], 50)
    print(
        f"targets: TorchScript >= 6x: {'met' if base / ts50 >= 6 else 'MISSED'} "
        f"({base / ts50:.2f}x); TorchScript p99 <= 100 us: "
        f"{'met' if ts99 <= 100 else 'MISSED'} ({ts99:.0f} us); ONNX Runtime >= 15x: "
        f"{'met' if base / ort50 >= 15 else 'MISSED'} ({base / ort50:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
