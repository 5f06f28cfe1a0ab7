"""Proof that a written policy file behaves like the trained SB3 policy: action parity on
test observations (:func:`check_parity`), closed-loop success (:func:`check_closed_loop`), and
loading and acting without SB3, Gymnasium or MuJoCo (:func:`check_isolated`); :func:`verify`
runs all three."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Final

import numpy as np

from manip_rl import policy_io
from manip_rl.export.build import PolicySource, _dict_keys_and_sizes
from manip_rl.export.policy_file import LoadedPolicy, load_policy
from manip_rl.stats import wilson_interval

PARITY_TOLERANCE: Final = 1e-5


def sb3_actions(source: PolicySource, flat_obs: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The SB3 deterministic actions for flat observations: VecNormalize's ``normalize_obs`` and
    then ``model.predict(deterministic=True)``, exactly as training's evaluation acts."""
    keys_sizes = _dict_keys_and_sizes(source.model.policy.observation_space)
    out = []
    for i in range(0, len(flat_obs), chunk):
        batch = np.asarray(flat_obs[i : i + chunk], dtype=np.float32)
        obs: Any = batch
        if keys_sizes:
            obs, start = {}, 0
            for key, size in keys_sizes:
                obs[key] = batch[:, start : start + size]
                start += size
        if source.vecnormalize is not None:
            obs = source.vecnormalize.normalize_obs(obs)
        action, _ = source.model.predict(obs, deterministic=True)
        out.append(np.asarray(action, dtype=np.float32).reshape(len(batch), -1))
    return np.concatenate(out)


def collect_observations(
    env_id: str,
    n: int,
    seed: int = 0,
    action_mode: str = policy_io.JOINT_DELTA,
    randomization: Any = "default",
) -> np.ndarray:
    """``n`` flat observations from the randomized env under uniformly random actions."""
    import gymnasium as gym

    env = gym.make(env_id, randomization=randomization, action_mode=action_mode)
    env.action_space.seed(seed)
    out = []
    obs, _ = env.reset(seed=seed)
    episode = 0
    while len(out) < n:
        out.append(policy_io.flatten_observation(obs))
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    env.close()
    return np.stack(out)


def parity_observations(
    source: PolicySource, n: int = 10_000, seed: int = 0, n_env: int = 1_000
) -> np.ndarray:
    """At least ``n`` test observations: real ones from the randomized env, Gaussian ones around
    the training statistics at 1x, 10x and 100x their spread, and extreme ones (entries up to
    +-1e6, one-hot spikes, zeros), so that normalization clipping and action clipping both act."""
    rng = np.random.default_rng(seed)
    real = collect_observations(
        source.env_id, n_env, seed, source.action_mode, source.randomization or "default"
    )
    vn = source.vecnormalize
    if vn is not None and getattr(vn, "norm_obs", False):
        keys = _dict_keys_and_sizes(source.model.policy.observation_space)
        rms = vn.obs_rms
        if keys:
            mean = np.concatenate(
                [np.ravel(rms[k].mean) if k in rms else np.zeros(s) for k, s in keys]
            )
            std = np.concatenate(
                [np.sqrt(np.ravel(rms[k].var)) if k in rms else np.ones(s) for k, s in keys]
            )
        else:
            mean, std = np.ravel(rms.mean), np.sqrt(np.ravel(rms.var))
    else:
        mean, std = real.mean(0), real.std(0)
    return _test_observations(real, mean, std, n, rng)


def _test_observations(
    real: np.ndarray, mean: np.ndarray, std: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``real`` observations plus Gaussian ones around ``mean`` at 1x, 10x and 100x ``std`` and
    extreme ones, at least ``n`` in all, as float32 (see :func:`parity_observations`)."""
    dim = real.shape[1]
    std = np.maximum(std, 1e-3)
    parts = [real]
    n_gauss = max(0, n - len(real) - 3 * dim - 4 - 2000)
    for i, scale in enumerate((1.0, 10.0, 100.0)):
        k = n_gauss // 3 + (n_gauss % 3 if i == 0 else 0)
        parts.append(mean + scale * std * rng.standard_normal((k, dim)))
    extremes = np.array([-1e6, -1e3, -10.0, -1.0, 0.0, 1.0, 10.0, 1e3, 1e6])
    parts.append(rng.choice(extremes, size=(2000, dim)))
    spikes = []
    for value in (1e6, -1e6, 1e3):
        block = np.tile(mean, (dim, 1))
        block[np.arange(dim), np.arange(dim)] = value
        spikes.append(block)
    parts += spikes
    parts.append(np.stack([np.zeros(dim), np.full(dim, 1e6), np.full(dim, -1e6), mean]))
    return np.concatenate(parts).astype(np.float32)


def check_parity(
    policy: LoadedPolicy, source: PolicySource, n: int = 10_000, seed: int = 0
) -> dict:
    """Max |file - SB3| over at least ``n`` observations (see :func:`parity_observations`)."""
    obs = parity_observations(source, n, seed)
    expected = sb3_actions(source, obs)
    got = policy.act(obs)
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    both_nan = np.isnan(got) & np.isnan(expected)
    diff[both_nan] = 0.0
    max_diff = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff)))
    return {
        "n": int(len(obs)),
        "max_abs_diff": max_diff,
        "tolerance": PARITY_TOLERANCE,
        "in_range": bool(np.all((got >= -1.0) & (got <= 1.0))),
        "ok": bool(max_diff <= PARITY_TOLERANCE and np.all(np.abs(got) <= 1.0)),
    }


def check_closed_loop(
    policy: LoadedPolicy, source: PolicySource, episodes: int = 50, seed: int = 10_000
) -> dict:
    """Success of the file and of the SB3 policy in the randomized env, on the same episode seeds.

    Randomization: the run's own configuration, else the task's default ranges. The file passes
    when its success rate lies inside the SB3 policy's 95% Wilson interval (and vice versa).
    """
    import gymnasium as gym

    randomization = source.randomization or "default"
    env = gym.make(source.env_id, randomization=randomization, action_mode=source.action_mode)
    dict_input = _dict_keys_and_sizes(source.model.policy.observation_space) is not None

    def sb3_act(obs: dict) -> np.ndarray:
        x: Any = obs if dict_input else policy_io.flatten_observation(obs)
        if source.vecnormalize is not None:
            x = source.vecnormalize.normalize_obs(x)
        return source.model.predict(x, deterministic=True)[0]

    def file_act(obs: dict) -> np.ndarray:
        return policy.act(policy_io.flatten_observation(obs))

    from manip_rl.episodes import run_episodes

    results = {}
    for name, act in (("sb3", sb3_act), ("file", file_act)):
        # One env, episode k seeded with seed + k: both actors face the same episodes.
        run = run_episodes([env], lambda obs, act=act: [act(obs[0])], episodes, seed)
        wins = sum(int(e.success) for e in run)
        lo, hi = wilson_interval(wins, episodes)
        results[name] = {
            "successes": wins,
            "episodes": episodes,
            "rate": wins / episodes,
            "ci95": [float(lo), float(hi)],
        }
    env.close()
    sb3, f = results["sb3"], results["file"]
    ok = (
        sb3["ci95"][0] <= f["rate"] <= sb3["ci95"][1]
        and f["ci95"][0] <= sb3["rate"] <= f["ci95"][1]
    )
    randomization_name = "run" if source.randomization else "default"
    return {**results, "randomization": randomization_name, "ok": bool(ok)}


# Run in a fresh interpreter by check_isolated: block SB3, Gymnasium and MuJoCo, then load & act.
_ISOLATED_SCRIPT = r"""
import importlib.abc, json, sys
BLOCKED = ("stable_baselines3", "sb3_contrib", "gymnasium", "gymnasium_robotics", "mujoco")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked in this test", name=name)
        return None

sys.meta_path.insert(0, Block())
try:
    import gymnasium  # noqa: F401
    blocker_active = False
except ImportError:
    blocker_active = True
import numpy as np
from manip_rl.export import load_policy
policy = load_policy(sys.argv[1])
obs = np.zeros(policy.obs_dim, dtype=np.float32)
a1 = policy.act(obs)
ab = policy.act(np.zeros((4, policy.obs_dim), dtype=np.float32))
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"action": a1.tolist(), "batch_shape": list(ab.shape), "leaked": leaked,
                  "blocker_active": blocker_active,
                  "task": policy.task, "obs_dim": policy.obs_dim}))
"""


def check_isolated(path: str | os.PathLike, timeout: float = 120.0) -> dict:
    """Load and act with the file in a subprocess where stable_baselines3, sb3_contrib,
    gymnasium and mujoco cannot be imported."""
    proc = subprocess.run(
        [sys.executable, "-c", _ISOLATED_SCRIPT, os.fspath(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr.strip().splitlines()[-1:] or ["exit code"]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["ok"] = (
        out["blocker_active"]
        and not out["leaked"]
        and out["batch_shape"] == [4, len(out["action"])]
        and bool(np.all(np.abs(out["action"]) <= 1.0))
    )
    return out


def verify(
    path: str | os.PathLike, source: PolicySource, episodes: int = 50, samples: int = 10_000
) -> dict:
    """The three checks of a written policy file: parity, closed loop, isolation."""
    policy = load_policy(path)
    report = {
        "parity": check_parity(policy, source, samples),
        "closed_loop": check_closed_loop(policy, source, episodes) if episodes > 0 else None,
        "isolated": check_isolated(path),
    }
    report["ok"] = all(v["ok"] for v in report.values() if v is not None)
    return report
