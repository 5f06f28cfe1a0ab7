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
from manip_rl.export.build import PolicySource, _dict_keys_and_sizes, actor_observation_space
from manip_rl.export.policy_file import LoadedPolicy, load_policy
from manip_rl.stats import wilson_interval

PARITY_TOLERANCE: Final = 1e-5


def sb3_actions(source: PolicySource, flat_obs: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The SB3 deterministic actions for flat observations: VecNormalize's ``normalize_obs`` and
    then ``model.predict(deterministic=True)``, exactly as training's evaluation acts."""
    space = source.model.policy.observation_space
    actor_space, actor_key = actor_observation_space(space)
    keys_sizes = _dict_keys_and_sizes(actor_space)
    out = []
    for i in range(0, len(flat_obs), chunk):
        batch = np.asarray(flat_obs[i : i + chunk], dtype=np.float32)
        obs: Any = batch
        if actor_key is not None:  # the critic's entry: zeros (the actor never reads it)
            obs = _with_privileged(space, actor_key, batch)
        elif keys_sizes:
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
    env_kwargs: dict[str, Any] | None = None,
) -> np.ndarray:
    """``n`` flat observations from the randomized env under uniformly random actions;
    ``env_kwargs``: the env's other gym.make keywords (the run's, e.g. an FR3 trajectory path)."""
    import gymnasium as gym

    env = gym.make(
        env_id, randomization=randomization, action_mode=action_mode, **(env_kwargs or {})
    )
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
        source.env_id,
        n_env,
        seed,
        source.action_mode,
        source.randomization or "default",
        source.env_kwargs,
    )
    vn = source.vecnormalize
    if vn is not None and getattr(vn, "norm_obs", False):
        actor_space, actor_key = actor_observation_space(source.model.policy.observation_space)
        keys = _dict_keys_and_sizes(actor_space)
        rms = vn.obs_rms[actor_key] if actor_key is not None else vn.obs_rms
        k = int(actor_space.shape[0]) // real.shape[1] if keys is None else 1
        if keys:
            mean = np.concatenate(
                [np.ravel(rms[k].mean) if k in rms else np.zeros(s) for k, s in keys]
            )
            std = np.concatenate(
                [np.sqrt(np.ravel(rms[k].var)) if k in rms else np.ones(s) for k, s in keys]
            )
        else:
            # An observation history's statistics: those of its newest slot.
            mean = np.ravel(rms.mean)[: real.shape[1]] if k > 1 else np.ravel(rms.mean)
            std = (
                np.sqrt(np.ravel(rms.var))[: real.shape[1]] if k > 1 else np.sqrt(np.ravel(rms.var))
            )
    else:
        mean, std = real.mean(0), real.std(0)
    return _test_observations(real, mean, std, n, rng)


def _with_privileged(space: Any, actor_key: str, batch: np.ndarray) -> dict[str, np.ndarray]:
    """The privileged critic's Dict observation for actor inputs ``batch``: zeros where the
    actor never looks (the ``privileged`` entry)."""
    return {
        key: batch if key == actor_key else np.zeros((len(batch), *sub.shape), dtype=np.float32)
        for key, sub in space.spaces.items()
    }


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
    """Max |file - SB3| over at least ``n`` observations (see :func:`parity_observations`); for
    a stateful file, step by step over whole episodes (:func:`check_episode_parity`)."""
    if policy.stateful:
        return check_episode_parity(policy, source, sequences=max(1, n // 500), seed=seed)
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


class Sb3Actor:
    """The SB3 policy acting as in training, one env at a time: the run's observation history
    and privileged entry built beside it, VecNormalize, ``predict(deterministic=True)``, and a
    recurrent policy's state carried until :meth:`reset`. ``history``: the k of the file's
    memory (1 without)."""

    def __init__(self, source: PolicySource, history: int = 1) -> None:
        from manip_rl.policies.memory import HistoryStack

        self.source = source
        self.space = source.model.policy.observation_space
        self.actor_key = actor_observation_space(self.space)[1]
        self.dict_input = _dict_keys_and_sizes(actor_observation_space(self.space)[0]) is not None
        self.k = int(history)
        self.stack_dim = 0
        self._stack_cls = HistoryStack
        self.reset()

    def reset(self) -> None:
        self.state: Any = None
        self.stacks: list[Any] | None = None
        self.started = True

    def __call__(self, obs: list[dict], envs: list[Any] | None = None) -> np.ndarray:
        """Actions for a batch of dict observations (``envs``: theirs, for the privileged
        entry; None puts zeros there)."""
        from manip_rl.policies.memory import OBS_KEY, privileged_vector

        if self.dict_input:
            x: Any = {k: np.stack([o[k] for o in obs]) for k in obs[0]}
        else:
            flat = np.stack([policy_io.flatten_observation(o) for o in obs]).astype(np.float32)
            if self.k > 1:
                if self.stacks is None:
                    self.stacks = [self._stack_cls(self.k, flat.shape[1]) for _ in obs]
                flat = np.stack([st.push(f) for st, f in zip(self.stacks, flat, strict=True)])
            x = flat
            if self.actor_key is not None:
                x = _with_privileged(self.space, OBS_KEY, flat)
                if envs is not None:
                    x["privileged"] = np.stack([privileged_vector(e.unwrapped) for e in envs])
        if self.source.vecnormalize is not None:
            x = self.source.vecnormalize.normalize_obs(x)
        starts = np.full(len(obs), self.started)
        action, self.state = self.source.model.predict(
            x, state=self.state, episode_start=starts, deterministic=True
        )
        self.started = False
        return np.asarray(action, dtype=np.float32).reshape(len(obs), -1)


def _history_of(policy: LoadedPolicy) -> int:
    memory = policy.metadata.get("memory") or {}
    return int(memory.get("history", 1)) if memory.get("kind") == "history" else 1


def check_episode_parity(
    policy: LoadedPolicy,
    source: PolicySource,
    episodes: int = 4,
    sequences: int = 20,
    length: int = 50,
    seed: int = 0,
) -> dict:
    """Parity of a stateful file with the SB3 policy, step by step, each carrying its own state
    from an episode's start: ``episodes`` whole episodes of the randomized env (the SB3 policy
    acts; the file sees the same observations), and ``sequences`` sequences of ``length`` test
    observations (:func:`parity_observations`: real, Gaussian far from the statistics,
    extreme) run as one batch. Max |file - SB3| over every step of every one."""
    import gymnasium as gym

    k = _history_of(policy)
    env = gym.make(
        source.env_id, randomization=source.randomization or "default",
        action_mode=source.action_mode, **source.env_kwargs,
    )  # fmt: skip
    diffs, steps, in_range = [0.0], 0, True
    sb3 = Sb3Actor(source, k)
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        policy.reset()
        sb3.reset()
        done = False
        while not done:
            expected = sb3([obs], [env])[0]
            got = policy.act(policy_io.flatten_observation(obs))
            diffs.append(_max_diff(got, expected))
            in_range &= bool(np.all(np.abs(got) <= 1.0))
            steps += 1
            obs, _, terminated, truncated, _ = env.step(expected)
            done = terminated or truncated
    env.close()
    # Test observations as sequences, the batch carrying one state per sequence.
    flat = parity_observations(source, sequences * length, seed)[: sequences * length]
    flat = flat.reshape(length, sequences, -1)
    policy.reset()
    sb3.reset()
    layout = policy.layout
    for t in range(length):
        dicts = [_as_dict(layout, row) for row in flat[t]]
        expected = sb3(dicts)
        got = policy.act(flat[t])
        diffs.append(_max_diff(got, expected))
        in_range &= bool(np.all(np.abs(got) <= 1.0))
        steps += sequences
    policy.reset()
    max_diff = float(max(diffs))
    return {
        "n": steps,
        "episodes": episodes,
        "sequences": sequences,
        "max_abs_diff": max_diff,
        "tolerance": PARITY_TOLERANCE,
        "in_range": in_range,
        "ok": bool(max_diff <= PARITY_TOLERANCE and in_range),
    }


def _as_dict(layout: policy_io.ObsLayout, flat: np.ndarray) -> dict[str, np.ndarray]:
    """A flat observation back as the env's dict (achieved_goal | desired_goal | observation)."""
    g = layout.goal_dim
    return {
        "achieved_goal": flat[:g],
        "desired_goal": flat[g : 2 * g],
        "observation": flat[2 * g :],
    }


def _max_diff(got: np.ndarray, expected: np.ndarray) -> float:
    diff = np.abs(np.asarray(got, np.float64) - np.asarray(expected, np.float64))
    diff[np.isnan(got) & np.isnan(expected)] = 0.0
    return float(np.nanmax(np.where(np.isnan(diff), np.inf, diff)))


def check_closed_loop(
    policy: LoadedPolicy, source: PolicySource, episodes: int = 50, seed: int = 10_000
) -> dict:
    """Success of the file and of the SB3 policy in the randomized env, on the same episode seeds.

    Randomization: the run's own configuration, else the task's default ranges. The file passes
    when its success rate lies inside the SB3 policy's 95% Wilson interval (and vice versa).
    """
    import gymnasium as gym

    randomization = source.randomization or "default"
    env = gym.make(
        source.env_id, randomization=randomization, action_mode=source.action_mode,
        **source.env_kwargs,
    )  # fmt: skip
    sb3 = Sb3Actor(source, _history_of(policy))

    def sb3_act(obs: dict) -> np.ndarray:
        return sb3([obs], [env])[0]

    def file_act(obs: dict) -> np.ndarray:
        return policy.act(policy_io.flatten_observation(obs))

    from manip_rl.episodes import run_episodes

    results = {}
    for name, act, reset in (("sb3", sb3_act, sb3.reset), ("file", file_act, policy.reset)):
        # One env, episode k seeded with seed + k: both actors face the same episodes, each
        # starting its memory afresh at every episode.
        run = run_episodes([env], lambda obs, act=act: [act(obs[0])], episodes, seed,
                           on_reset=lambda i, e, reset=reset: reset())  # fmt: skip
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
policy.reset()  # a stateful policy's state is per batch
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
