"""Training configuration: per-task YAML (each task spec's ``train_file``,
``manip_rl/configs/tasks/<task>/train.yaml``), command-line overrides, and the environment
factory that training, evaluation and videos share."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from manip_rl.envs import registry
from manip_rl.policies.algorithms import ALGORITHMS
from manip_rl.policies.train_config import (  # noqa: F401  (re-exported: the public names)
    ACTIVATIONS,
    BACKENDS,
    TASKS,
    TOP_KEYS,
    VEC_ENVS,
    ConfigError,
    TrainConfig,
    check,
    typed,
    unknown_key,
)

# The keys, their types, ranges and docs: manip_rl.policies.train_config.TrainConfig.
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "vec_env": "subproc",
    "policy": "MlpPolicy",
    "policy_kwargs": {},
    "hyperparams": {},
    "normalize": {"norm_obs": True, "norm_reward": True, "clip_obs": 10.0},
    "randomization": "default",
    "action_mode": "joint_delta",
    "flatten_obs": True,
    "eval": {"freq": 20000, "episodes": 40},
    "checkpoint_freq": 20000,
    "device": "cpu",
    "torch_threads": 1,
    "update_threads": "auto",
    "history": 1,
    "privileged_critic": False,
}


def task_name(task: str) -> str:
    """'PandaPush', 'PandaPushDense', 'manip_rl/PandaPush-v0' -> 'PandaPush'."""
    try:
        return registry.get(task).name
    except registry.UnknownTaskError as e:
        raise ConfigError(str(e)) from None


def deep_merge(base: Mapping, over: Mapping) -> dict:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def read_yaml(path: str) -> Any:
    """A YAML file's contents; bad syntax raises :class:`ConfigError` with the file and line."""
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else path
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e})") from None


def _read_yaml(path: str) -> dict:
    return read_yaml(path) or {}


def load_config(task: str, algo: str, config_file: str | None = None) -> dict:
    """train.yaml's defaults <- its algorithms.<algo> (<- ``config_file``[task] or the whole
    file); train.yaml is the task spec's ``train_file``."""
    if algo not in ALGORITHMS:
        raise ConfigError(f"--algo {algo!r} is unknown; use one of {', '.join(ALGORITHMS)}")
    name = task_name(task)
    task_file = _read_yaml(registry.get(name).train_path)
    cfg = deep_merge(DEFAULTS, task_file.get("defaults") or {})
    cfg = deep_merge(cfg, (task_file.get("algorithms") or {}).get(algo) or {})
    if config_file:
        if not os.path.isfile(config_file):
            raise ConfigError(f"--config {config_file!r} does not exist")
        user = _read_yaml(config_file)
        if not isinstance(user, Mapping):
            raise ConfigError(
                f"--config {config_file}: expected a mapping of configuration keys (or of task "
                f"names to them), got {type(user).__name__}"
            )
        cfg = deep_merge(cfg, user.get(name, user))
    cfg["algo"], cfg["task"] = algo, name
    if "/" in task:  # an explicit env id (e.g. the sparse variant) wins over the table
        cfg["env_id"] = task
    return cfg


def apply_overrides(cfg: dict, overrides: Sequence[str]) -> dict:
    """Apply ``key.sub=value`` overrides; values are parsed as YAML (numbers, lists, null...)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(
                f"--set {item!r}: write KEY=VALUE, e.g. hyperparams.learning_rate=1e-4"
            )
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if parts[0] not in TOP_KEYS:
            raise ConfigError(f"--set {key!r}: {unknown_key(parts[0], TOP_KEYS)}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({e})") from None
        if isinstance(value, str):  # YAML reads 1e-4 as a string; numbers should be numbers
            try:
                value = float(value)
            except ValueError:
                pass
        node = cfg
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return cfg


def validate(cfg: Mapping) -> dict:
    """``cfg`` checked in full (types, ranges, known keys; see
    :class:`~manip_rl.policies.train_config.TrainConfig`) and normalized, its randomization
    resolved to ranges; raises :class:`ConfigError` naming the key and what is allowed."""
    return check(cfg)


def policy_kwargs(cfg: Mapping) -> dict:
    """SB3 policy_kwargs with the activation resolved from its name."""
    import torch.nn as nn

    kw = dict(cfg.get("policy_kwargs") or {})
    if "activation_fn" in kw:
        kw["activation_fn"] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}[kw["activation_fn"]]
    return kw


def randomization_dict(cfg: Mapping) -> dict | None:
    """The randomization configuration as a plain dict (what the run records), or None."""
    from manip_rl.envs.randomization import load_config as load_dr

    task = registry.get(task_name(cfg["env_id"])).key
    dr = load_dr(cfg.get("randomization"), task)
    return None if dr is None else dr.to_dict()


class EnvFactory:
    """Picklable env constructor (SubprocVecEnv sends it to each worker)."""

    def __init__(
        self,
        env_id: str,
        randomization: dict | None,
        action_mode: str,
        flatten_obs: bool,
        seed: int | None = None,
        render_mode: str | None = None,
        monitor: bool = True,
        env_kwargs: Mapping | None = None,
        history: int = 1,
        privileged: bool = False,
    ) -> None:
        self.env_id, self.randomization, self.action_mode = env_id, randomization, action_mode
        self.flatten_obs, self.seed, self.render_mode, self.monitor = (
            flatten_obs,
            seed,
            render_mode,
            monitor,
        )
        self.env_kwargs = dict(env_kwargs or {})
        self.history, self.privileged = int(history), bool(privileged)

    def __call__(self):
        import gymnasium as gym

        import manip_rl  # noqa: F401  (registers the envs in a fresh worker)

        env = gym.make(
            self.env_id,
            randomization=self.randomization,
            action_mode=self.action_mode,
            render_mode=self.render_mode,
            **self.env_kwargs,
        )
        if self.flatten_obs:
            # Same order as policy_io.flatten_observation: achieved_goal|desired_goal|observation.
            env = gym.wrappers.FlattenObservation(env)
        if self.history > 1 or self.privileged:
            from manip_rl.policies.memory import wrap_for_training

            env = wrap_for_training(env, self.history, self.privileged)
        if self.monitor:
            from stable_baselines3.common.monitor import Monitor

            env = Monitor(env, info_keywords=("is_success",))
        if self.seed is not None:
            env.reset(seed=self.seed)
            env.action_space.seed(self.seed)
        return env


def env_factory(cfg: Mapping, randomized: bool = True, seed: int | None = None, **kw) -> EnvFactory:
    """The run's env: its id, randomization, action mode, observation options and
    ``env_kwargs``; ``kw`` go to :class:`EnvFactory` (an ``env_kwargs`` there, such as the
    training aids, is merged over the run's)."""
    kw["env_kwargs"] = {**(cfg.get("env_kwargs") or {}), **(kw.get("env_kwargs") or {})}
    rand = None
    if randomized:
        # A run trained on the nominal model is still judged under the task's default ranges.
        rand = randomization_dict(cfg) or randomization_dict({**cfg, "randomization": "default"})
    return EnvFactory(
        cfg["env_id"],
        rand,
        cfg.get("action_mode", "joint_delta"),
        bool(cfg.get("flatten_obs", True)),
        seed=seed,
        history=int(cfg.get("history", 1)),
        privileged=bool(cfg.get("privileged_critic", False)),
        **kw,
    )
