"""The training configuration as one typed, documented dataclass, checked in full before a run
directory exists.

A configuration is what the task's ``train.yaml`` (``defaults`` and its algorithm's section) merges
into, with ``--config`` and ``--set`` over them (:mod:`manip_rl.policies.config`); the run
records it as ``RUN/config.yaml``. :func:`check` takes that dict and returns it with every value
checked and normalized (numbers written as strings by YAML 1.1, such as ``3e-4``, become
numbers); any problem raises :class:`ConfigError` naming the key and what is allowed, with a
"did you mean" for a misspelt key.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Mapping
from typing import Any, Final

from manip_rl.envs import registry
from manip_rl.policies.algorithms import ALGORITHMS, PRIVILEGED_CRITIC, RECURRENT

TASKS: Final = registry.names()

ACTION_MODES: Final = ("joint_delta", "ee_delta")
POLICIES: Final = ("MlpPolicy", "MultiInputPolicy")
ACTIVATIONS: Final = ("tanh", "relu", "elu")
# chunked: one worker process per CPU, each stepping several envs (manip_rl.policies.vec_env);
# subproc: SB3's SubprocVecEnv, one process per env; dummy: all envs in the training process;
# ray: groups of envs in Ray actors on any node of a cluster (manip_rl.distributed.ray_vec_env).
VEC_ENVS: Final = ("chunked", "subproc", "dummy", "ray")
RAY_TRANSPORTS: Final = ("direct", "ray")
# cpu: SB3 over CPU MuJoCo envs; warp: batched MuJoCo Warp worlds, rsl_rl's PPO (docs/warp.md).
BACKENDS: Final = ("cpu", "warp")
RANDOMIZATION_PRESETS: Final = ("default", "none")


class ConfigError(ValueError):
    """A training configuration or override that cannot be used; the message names the key."""


@dataclasses.dataclass
class NormalizeConfig:
    """SB3 ``VecNormalize`` arguments (``normalize:``; ``false`` turns normalization off)."""

    norm_obs: bool = True
    """Normalize observations by their running mean and variance (baked into the export)."""
    norm_reward: bool = True
    """Scale rewards by the running standard deviation of the discounted return."""
    clip_obs: float = 10.0
    """Normalized observations are clipped to [-clip_obs, clip_obs]; must be > 0."""
    clip_reward: float = 10.0
    """Normalized rewards are clipped to [-clip_reward, clip_reward]; must be > 0."""
    epsilon: float = 1e-8
    """Added to the variance before the square root; must be > 0."""
    norm_obs_keys: list[str] | None = None
    """Dict observations only: the keys to normalize (None: all)."""


@dataclasses.dataclass
class EvalConfig:
    """Periodic evaluation during training (``eval:``), randomized and nominal."""

    freq: int = 20000
    """Environment steps between evaluations; 0 evaluates only at the end."""
    episodes: int = 40
    """Episodes per condition and evaluation; at least 1."""


@dataclasses.dataclass
class TrainConfig:
    """One training run. Every key of ``RUN/config.yaml`` is a field here."""

    env_id: str
    """Registered env id, e.g. ``manip_rl/PandaPushDense-v0`` (the dense variant: on-policy
    methods need the shaping)."""
    algo: str
    """The algorithm: ppo | a2c | trpo | reinforce | ppo_kl | recurrent_ppo (sb3-contrib's
    RecurrentPPO: an LSTM policy, whose exported file carries the LSTM state)."""
    task: str
    """A task of the registry (``manip-rl envs``), e.g. PandaPush (must match env_id)."""
    total_timesteps: int
    """Environment steps to train for; at least 1."""
    n_envs: int
    """Parallel training environments; at least 1."""
    seed: int = 0
    """Random seed of the model and of the envs (env i gets seed + i); >= 0."""
    vec_env: str = "subproc"
    """chunked (a worker process per CPU), subproc (a process per env), dummy (in-process) or
    ray (Ray actors on a cluster: RAY_ADDRESS, else an embedded local Ray)."""
    backend: str = "cpu"
    """cpu: SB3 over CPU MuJoCo envs (vec_env says how); warp: n_envs batched MuJoCo Warp worlds
    on ``device`` (cpu: Warp's CPU device, cuda), trained by rsl_rl's PPO (ppo only;
    docs/warp.md)."""
    n_workers: int | None = None
    """chunked: worker processes; ray: actors (None: one per CPU, of the cluster for ray)."""
    ray_transport: str = "direct"
    """vec_env ray: how steps travel. direct (a connection from the driver to each actor,
    authenticated; the default) or ray (each step a Ray actor call: slower, only Ray's ports)."""
    policy: str = "MlpPolicy"
    """SB3 policy: MlpPolicy (flatten_obs: true) or MultiInputPolicy (flatten_obs: false)."""
    policy_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """SB3 policy arguments: net_arch, activation_fn (tanh | relu | elu), log_std_init, ..."""
    hyperparams: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The algorithm's constructor arguments (see HYPERPARAMS for the ones each takes)."""
    normalize: NormalizeConfig | None = dataclasses.field(default_factory=NormalizeConfig)
    """VecNormalize arguments, or None/false for no normalization."""
    randomization: Any = "default"
    """default | none | a YAML path, resolved into the ranges themselves before the run starts
    (a run records its ranges, not their name)."""
    action_mode: str = "joint_delta"
    """joint_delta (7 joint deltas) | ee_delta (3 TCP deltas), plus the gripper where it has one."""
    flatten_obs: bool = True
    """True: the policy sees policy_io.flatten_observation(obs) (an MlpPolicy)."""
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    """Periodic evaluation."""
    checkpoint_freq: int = 20000
    """Environment steps between checkpoints; at least 1 (a kill loses at most this many)."""
    log_interval: int | None = None
    """Iterations between rows of progress.csv (None: about every 1000 steps)."""
    device: str = "cpu"
    """torch device: cpu | cuda | cuda:N | auto."""
    torch_threads: int = 1
    """torch threads while the envs step; at least 1."""
    update_threads: int | str = "auto"
    """torch threads during the gradient update: a positive integer or auto (all cores)."""
    max_minutes: float | None = None
    """Wall-clock budget in minutes (resumed time included), or None."""
    env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """gym.make keywords that define the env itself (e.g. {max_episode_steps: 200,
    trajectory_robot: fr3}): the training and evaluation envs, videos and the exported file's
    make_env all get them. JSON values only; not randomization, action_mode or render_mode
    (their own keys)."""
    train_env_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Constructor arguments of the training envs only (e.g. {grasped_start: 0.5})."""
    history: int = 1
    """Observation history k: the policy sees its last k flat observations, newest first (each
    holds the previous action, so the last k actions too); 1 is the memoryless policy. The
    exported file carries the history as its state. Not with recurrent_ppo (the LSTM is the
    memory there); needs flatten_obs: true."""
    privileged_critic: bool = False
    """Asymmetric actor-critic: the critic also sees the episode's randomization draw and the
    noiseless state (manip_rl.policies.privileged); the actor, and so the exported file, sees
    only the robot's observation. ppo and recurrent_ppo; needs flatten_obs: true."""


TOP_KEYS: Final = tuple(f.name for f in dataclasses.fields(TrainConfig))
_NORMALIZE_KEYS: Final = tuple(f.name for f in dataclasses.fields(NormalizeConfig))
_EVAL_KEYS: Final = tuple(f.name for f in dataclasses.fields(EvalConfig))

# Each algorithm's constructor arguments (what ``hyperparams:`` may hold; tests check this table
# against the classes' signatures).
_ON_POLICY: Final = ("learning_rate", "n_steps", "gamma", "gae_lambda", "normalize_advantage",
                     "ent_coef", "vf_coef", "max_grad_norm", "stats_window_size")  # fmt: skip
HYPERPARAMS: Final[dict[str, tuple[str, ...]]] = {
    "ppo": (*_ON_POLICY, "batch_size", "n_epochs", "clip_range", "clip_range_vf", "use_sde",
            "sde_sample_freq", "target_kl"),
    "a2c": (*_ON_POLICY, "rms_prop_eps", "use_rms_prop", "use_sde", "sde_sample_freq"),
    "trpo": ("learning_rate", "n_steps", "batch_size", "gamma", "cg_max_steps", "cg_damping",
             "line_search_shrinking_factor", "line_search_max_iter", "n_critic_updates",
             "gae_lambda", "use_sde", "sde_sample_freq", "normalize_advantage", "target_kl",
             "sub_sampling_factor", "stats_window_size"),
    "reinforce": ("learning_rate", "n_steps", "gamma", "reward_to_go", "baseline",
                  "normalize_advantage", "ent_coef", "vf_coef", "max_grad_norm",
                  "stats_window_size"),
    "ppo_kl": (*_ON_POLICY, "batch_size", "n_epochs", "target_kl", "kl_coef"),
    "recurrent_ppo": (*_ON_POLICY, "batch_size", "n_epochs", "clip_range", "clip_range_vf",
                      "use_sde", "sde_sample_freq", "target_kl"),
}  # fmt: skip
# name -> (kind, low, high, what); kind: "pos" (> low), "num" (>= low), "int", "bool", "opt+"
# (None or > 0), "frac" ((0, 1]), "unit" ([0, 1]), or a tuple of allowed strings.
_RULES: Final[dict[str, tuple]] = {
    "learning_rate": ("pos",),
    "n_steps": ("int", 1),
    "batch_size": ("int", 2),
    "n_epochs": ("int", 1),
    "gamma": ("frac",),
    "gae_lambda": ("unit",),
    "clip_range": ("pos",),
    "clip_range_vf": ("opt+",),
    "normalize_advantage": ("bool",),
    "ent_coef": ("num", 0.0),
    "vf_coef": ("num", 0.0),
    "max_grad_norm": ("pos",),
    "use_sde": ("bool",),
    "sde_sample_freq": ("int", -1),
    "target_kl": ("opt+",),
    "stats_window_size": ("int", 1),
    "rms_prop_eps": ("pos",),
    "use_rms_prop": ("bool",),
    "cg_max_steps": ("int", 1),
    "cg_damping": ("pos",),
    "line_search_shrinking_factor": ("open01",),
    "line_search_max_iter": ("int", 1),
    "n_critic_updates": ("int", 1),
    "sub_sampling_factor": ("int", 1),
    "reward_to_go": ("bool",),
    "baseline": (("none", "mean", "value"),),
    "kl_coef": ("num", 0.0),
}
_POLICY_KWARGS: Final = ("net_arch", "activation_fn", "log_std_init", "ortho_init", "full_std",
                         "use_expln", "squash_output", "share_features_extractor",
                         "optimizer_kwargs")  # fmt: skip
# sb3-contrib's RecurrentActorCriticPolicy arguments (recurrent_ppo only).
_LSTM_KWARGS: Final = ("lstm_hidden_size", "n_lstm_layers", "shared_lstm", "enable_critic_lstm")
_WHAT = {
    "pos": "a number > 0",
    "frac": "a number in (0, 1]",
    "unit": "a number in [0, 1]",
    "open01": "a number in (0, 1)",
    "opt+": "null or a number > 0",
    "bool": "true or false",
}


def unknown_key(key: str, allowed: tuple[str, ...] | list[str], where: str = "") -> ConfigError:
    """The error for a key that is not allowed: names it, lists the allowed ones, and offers
    the closest one."""
    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(
        f"unknown configuration key {where + key!r}{hint} (allowed: {', '.join(allowed)})"
    )


def _as_number(key: str, v: Any, what: str) -> float:
    if isinstance(v, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
        try:
            v = float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"{key}={v!r}: must be {what}")
    return v


def _as_int(key: str, v: Any, low: int) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ConfigError(f"{key}={v!r}: must be an integer >= {low}")
    return v


def _as_bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"{key}={v!r}: must be true or false")
    return v


def _as_choice(key: str, v: Any, allowed: tuple[str, ...]) -> str:
    if v not in allowed:
        close = difflib.get_close_matches(str(v), allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key}={v!r}: use one of {', '.join(allowed)}{hint}")
    return v


def _apply_rule(key: str, v: Any, rule: tuple) -> Any:
    kind = rule[0]
    if isinstance(kind, tuple):
        return _as_choice(key, v, kind)
    if kind == "int":
        return _as_int(key, v, rule[1])
    if kind == "bool":
        return _as_bool(key, v)
    if kind == "opt+" and v is None:
        return None
    if kind == "num":
        x = _as_number(key, v, f"a number >= {rule[1]}")
        if x < rule[1]:
            raise ConfigError(f"{key}={v!r}: must be a number >= {rule[1]}")
        return x
    x = _as_number(key, v, _WHAT[kind])
    ok = {
        "pos": x > 0,
        "opt+": x > 0,
        "frac": 0 < x <= 1,
        "unit": 0 <= x <= 1,
        "open01": 0 < x < 1,
    }[kind]
    if not ok:
        raise ConfigError(f"{key}={v!r}: must be {_WHAT[kind]}")
    return x


def _mapping(key: str, v: Any, example: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ConfigError(f"{key}={v!r}: use a mapping, e.g. {example}")
    return dict(v)


def _check_keys(d: Mapping, allowed: tuple[str, ...], where: str) -> None:
    for key in d:
        if key not in allowed:
            raise unknown_key(str(key), allowed, where)


def check(cfg: Mapping) -> dict:
    """``cfg`` checked in full and normalized; raises :class:`ConfigError` naming the key.

    The randomization is resolved to its ranges here (a name or a path becomes the dict a run
    records), so a bad randomization file is refused before the run starts too."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"the configuration must be a mapping of keys, got {cfg!r}")
    _check_keys(cfg, TOP_KEYS, "")
    out = dict(cfg)
    for key in ("env_id", "algo", "task", "total_timesteps", "n_envs"):
        if key not in out:
            raise ConfigError(f"configuration key {key!r} is missing")
    out["algo"] = _as_choice("algo", out["algo"], ALGORITHMS)
    out["task"] = _as_choice("task", out["task"], TASKS)
    env_id = out["env_id"]
    try:
        stem = registry.get(env_id).name if isinstance(env_id, str) else None
    except registry.UnknownTaskError:
        stem = None
    if stem != out["task"]:
        raise ConfigError(
            f"env_id={env_id!r}: must be an id of task {out['task']}, e.g. "
            f"manip_rl/{out['task']}Dense-v0"
        )
    _check_registered(env_id)
    for key in ("total_timesteps", "n_envs"):
        out[key] = _as_int(key, out[key], 1)
    out["seed"] = _as_int("seed", out.get("seed", 0), 0)
    out["vec_env"] = _as_choice("vec_env", out.get("vec_env", "subproc"), VEC_ENVS)
    out["backend"] = _as_choice("backend", out.get("backend", "cpu"), BACKENDS)
    if out.get("n_workers") is not None:
        out["n_workers"] = _as_int("n_workers", out["n_workers"], 1)
    out["ray_transport"] = _as_choice("ray_transport", out.get("ray_transport", "direct"),
                                      RAY_TRANSPORTS)  # fmt: skip
    out["action_mode"] = _as_choice("action_mode", out.get("action_mode", "joint_delta"),
                                    ACTION_MODES)  # fmt: skip
    out["flatten_obs"] = _as_bool("flatten_obs", out.get("flatten_obs", True))
    policy = _as_choice("policy", out.get("policy", "MlpPolicy"), POLICIES)
    if (policy == "MlpPolicy") != out["flatten_obs"]:
        raise ConfigError(
            f"policy={policy!r} with flatten_obs={out['flatten_obs']}: use MlpPolicy with "
            "flatten_obs: true, or MultiInputPolicy with flatten_obs: false"
        )
    out["checkpoint_freq"] = _as_int("checkpoint_freq", out.get("checkpoint_freq", 20000), 1)
    if out.get("log_interval") is not None:
        out["log_interval"] = _as_int("log_interval", out["log_interval"], 1)
    device = out.get("device", "cpu")
    if not isinstance(device, str) or device.split(":")[0] not in ("cpu", "cuda", "auto", "mps"):
        raise ConfigError(f"device={device!r}: use cpu, cuda, cuda:N or auto")
    out["torch_threads"] = _as_int("torch_threads", out.get("torch_threads", 1), 1)
    threads = out.get("update_threads", "auto")
    if threads != "auto":
        try:
            out["update_threads"] = _as_int("update_threads", threads, 1)
        except ConfigError:
            raise ConfigError(
                f"update_threads={threads!r}: use a positive integer or auto"
            ) from None
    if out.get("max_minutes") is not None:
        limit = out["max_minutes"]
        if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0:
            raise ConfigError(f"max_minutes={limit!r}: must be a positive number of minutes")
    if out.get("env_kwargs") is not None:
        out["env_kwargs"] = _check_env_kwargs(out["env_kwargs"])
    if "train_env_kwargs" in out:
        if out["train_env_kwargs"] is not None and not isinstance(out["train_env_kwargs"], Mapping):
            raise ConfigError(
                f"train_env_kwargs={out['train_env_kwargs']!r}: use a mapping of the training "
                "envs' constructor arguments, e.g. {grasped_start: 0.5}"
            )
    out["hyperparams"] = _check_hyperparams(out, out["algo"])
    out["policy_kwargs"] = _check_policy_kwargs(out.get("policy_kwargs"), out["algo"])
    _check_memory(out)
    out["normalize"] = _check_normalize(out.get("normalize", {}))
    ev = _mapping("eval", out.get("eval"), "{freq: 20000, episodes: 40}")
    _check_keys(ev, _EVAL_KEYS, "eval.")
    ev["freq"] = _as_int("eval.freq", ev.get("freq", 20000), 0)
    ev["episodes"] = _as_int("eval.episodes", ev.get("episodes", 40), 1)
    out["eval"] = ev
    out["randomization"] = _check_randomization(out.get("randomization", "default"), out["task"])
    return out


def typed(cfg: Mapping) -> TrainConfig:
    """The checked configuration as a :class:`TrainConfig`."""
    d = check(cfg)
    norm = d.get("normalize")
    return TrainConfig(
        **{k: v for k, v in d.items() if k not in ("normalize", "eval")},
        normalize=None if not norm else NormalizeConfig(**norm),
        eval=EvalConfig(**d["eval"]),
    )


def _check_registered(env_id: str) -> None:
    import gymnasium as gym

    import manip_rl  # noqa: F401  (registers the envs)

    if env_id not in gym.registry:
        ours = sorted(k for k in gym.registry if k.startswith("manip_rl/"))
        close = difflib.get_close_matches(env_id, ours, n=1, cutoff=0.6)
        raise ConfigError(
            f"env_id={env_id!r} is not registered"
            + (f" (did you mean {close[0]!r}?)" if close else "")
            + f"; registered: {', '.join(ours)}"
        )


_OWN_KEYS = ("randomization", "action_mode", "render_mode")


def _check_env_kwargs(value: Any) -> dict[str, Any]:
    """``env_kwargs``: a mapping of JSON values (the exported file records it), none of the keys
    that have their own config key, ``max_episode_steps`` a positive integer."""
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"env_kwargs={value!r}: use a mapping of gym.make keywords, e.g. "
            "{max_episode_steps: 200, trajectory_robot: fr3}"
        )
    out = dict(value)
    own = sorted(set(out) & set(_OWN_KEYS))
    if own:
        raise ConfigError(f"env_kwargs: {own} have their own config keys; set them there")
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ConfigError(
            f"env_kwargs: JSON values only (the policy file records them): {e}"
        ) from None
    if "max_episode_steps" in out:
        out["max_episode_steps"] = _as_int(
            "env_kwargs.max_episode_steps", out["max_episode_steps"], 1
        )
    return out


def _check_hyperparams(cfg: Mapping, algo: str) -> dict:
    hp = _mapping("hyperparams", cfg.get("hyperparams"), "{learning_rate: 3.0e-4}")
    allowed = HYPERPARAMS[algo]
    for key in hp:
        if key not in allowed:
            raise unknown_key(str(key), allowed, "hyperparams.")
        if key in _RULES:
            hp[key] = _apply_rule(f"hyperparams.{key}", hp[key], _RULES[key])
    if algo in ("ppo", "ppo_kl") and hp.get("n_steps", 2048) * cfg["n_envs"] < 2:
        raise ConfigError(
            f"hyperparams.n_steps={hp.get('n_steps')} with n_envs={cfg['n_envs']}: {algo} needs "
            "a rollout of at least 2 steps (n_steps * n_envs >= 2)"
        )
    return hp


def _check_memory(out: dict) -> None:
    """history and privileged_critic: their values, and the algorithms they go with."""
    k = out["history"] = _as_int("history", out.get("history", 1), 1)
    priv = out["privileged_critic"] = _as_bool(
        "privileged_critic", out.get("privileged_critic", False)
    )
    algo = out["algo"]
    if k > 1 and algo in RECURRENT:
        raise ConfigError(
            f"history={k} with algo={algo}: the LSTM is the policy's memory already; use "
            "history: 1 with recurrent_ppo, or a memoryless algorithm with history: k"
        )
    if priv and algo not in PRIVILEGED_CRITIC:
        raise ConfigError(
            f"privileged_critic=true with algo={algo}: the privileged critic is built for "
            f"{', '.join(PRIVILEGED_CRITIC)}; pick one of them or set privileged_critic: false"
        )
    for key, on in (("history", k > 1), ("privileged_critic", priv)):
        if on and not out["flatten_obs"]:
            raise ConfigError(
                f"{key}={out[key]!r} needs flatten_obs: true and policy: MlpPolicy (it wraps "
                "the flat observation)"
            )


def _check_policy_kwargs(v: Any, algo: str = "ppo") -> dict:
    kw = _mapping("policy_kwargs", v, "{net_arch: [256, 256], activation_fn: tanh}")
    allowed = _POLICY_KWARGS + (_LSTM_KWARGS if algo in RECURRENT else ())
    for key in kw:
        if key in _LSTM_KWARGS and algo not in RECURRENT:
            raise ConfigError(
                f"policy_kwargs.{key}: an LSTM setting, for algo recurrent_ppo only (algo is "
                f"{algo})"
            )
    _check_keys(kw, allowed, "policy_kwargs.")
    for key in ("lstm_hidden_size", "n_lstm_layers"):
        if key in kw:
            kw[key] = _as_int(f"policy_kwargs.{key}", kw[key], 1)
    if "net_arch" in kw:
        arch = kw["net_arch"]
        layers = [arch] if not isinstance(arch, Mapping) else [arch.get("pi"), arch.get("vf")]
        if isinstance(arch, Mapping):
            _check_keys(arch, ("pi", "vf"), "policy_kwargs.net_arch.")
        for layer in layers:
            if layer is None:
                continue
            if not isinstance(layer, list) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in layer
            ):
                raise ConfigError(
                    f"policy_kwargs.net_arch={arch!r}: use a list of layer widths (positive "
                    "integers), e.g. [256, 256], or {pi: [...], vf: [...]}"
                )
    if "activation_fn" in kw:
        _as_choice("policy_kwargs.activation_fn", kw["activation_fn"], ACTIVATIONS)
    if "log_std_init" in kw:
        kw["log_std_init"] = _as_number("policy_kwargs.log_std_init", kw["log_std_init"],
                                        "a finite number")  # fmt: skip
    for key in ("ortho_init", "full_std", "use_expln", "squash_output", "share_features_extractor",
                "shared_lstm", "enable_critic_lstm"):  # fmt: skip
        if key in kw:
            _as_bool(f"policy_kwargs.{key}", kw[key])
    return kw


def _check_normalize(v: Any) -> dict | None:
    if v is None or v is False:
        return None
    norm = _mapping("normalize", v, "{norm_obs: true, norm_reward: true, clip_obs: 10.0}")
    _check_keys(norm, _NORMALIZE_KEYS, "normalize.")
    for key in ("norm_obs", "norm_reward"):
        if key in norm:
            norm[key] = _as_bool(f"normalize.{key}", norm[key])
    for key in ("clip_obs", "clip_reward", "epsilon"):
        if key in norm:
            norm[key] = _apply_rule(f"normalize.{key}", norm[key], ("pos",))
    keys = norm.get("norm_obs_keys")
    if keys is not None and (
        not isinstance(keys, list) or not all(isinstance(k, str) for k in keys)
    ):
        raise ConfigError(f"normalize.norm_obs_keys={keys!r}: use a list of observation keys")
    return norm


def _check_randomization(v: Any, task: str) -> dict | None:
    import os

    from manip_rl.envs.randomization import RandomizationConfigError, load_config

    if v is None or v is False or v == "none":
        return None
    if isinstance(v, str) and v not in RANDOMIZATION_PRESETS and not os.path.isfile(v):
        close = difflib.get_close_matches(v, RANDOMIZATION_PRESETS, n=1, cutoff=0.6)
        raise ConfigError(
            f"randomization={v!r}: no such file; use default, none or a YAML file path"
            + (f" (did you mean {close[0]!r}?)" if close else "")
        )
    if not isinstance(v, str | Mapping):
        raise ConfigError(f"randomization={v!r}: use default, none, a YAML path or a mapping")
    dr_task = registry.get(task).key
    try:
        dr = load_config(v, dr_task)
    except RandomizationConfigError as e:
        raise ConfigError(f"randomization: {e}") from None
    return None if dr is None else dr.to_dict()
