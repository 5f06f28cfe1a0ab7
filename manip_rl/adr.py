"""Automatic domain randomization (ADR; OpenAI et al., "Solving Rubik's Cube with a Robot Hand",
2019, Sec. 5): ``manip-rl train --dr adr``.

Each randomized quantity has a current range ``[low, high]`` that starts at its nominal value. On
every reset, with probability ``boundary_prob``, one movable boundary is picked at random
(uniformly, or with ``boundary_focus`` weighted toward the boundaries furthest below
``success_high``) and the episode runs with that quantity pinned at the boundary (the others are
sampled from their current ranges). The episode's success goes into that boundary's buffer; when
the buffer holds ``buffer_size`` episodes, a mean success of at least ``success_high`` moves the
boundary one ``step`` outward (wider), at most ``success_low`` one step back toward nominal
(narrower), and the buffer is emptied. Ranges never pass their hard limits and always contain the
nominal value.

The pieces:

- :class:`AdrSettings`: what is randomized, with which steps and limits (``--dr adr`` ships
  :data:`DEFAULT_PARAMS`; ``--dr FILE.yaml`` merges a YAML file over them).
- :class:`AdrState`: the ranges and the buffers, with the update rule (no environment in it).
- :class:`AdrWrapper`: in each environment process, turns the ranges into a
  :class:`~manip_rl.envs.randomization.RandomizationConfig` per episode and reports in
  ``info["adr_boundary"]`` which boundary (and at which value) the episode evaluates.
- :class:`AdrCallback`: in the training process, collects episode success per boundary from the
  vector env's ``infos``, updates the ranges, pushes them into every environment process with
  ``env_method`` (SubprocVecEnv included), logs them through SB3's logger (TensorBoard and
  ``progress.csv``) and into ``RUN/adr/ranges.csv``, and saves them with every checkpoint
  (``RUN/adr/state_<N>.json``) so ``--resume`` continues from the same ranges.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import yaml

from manip_rl.envs import registry
from manip_rl.envs.randomization import (
    DomainRandomizer,
    RandomizationConfig,
    Range,
    load_config,
)
from manip_rl.fileio import atomic_write_text

ADR_DIR = "adr"
SETTINGS_FILE = "settings.json"
RANGES_FILE = "ranges.json"
EVENTS_FILE = "ranges.csv"
EVENT_COLUMNS = ("timesteps", "boundary", "success", "episodes", "action", "low", "high")
SPACES = ("log", "linear", "int")
# Physics quantities ADR drives, as ``scale`` factors of the compiled model's nominal values.
PHYSICS_PARAMS = (
    "link_mass",
    "object_mass",
    "friction",
    "joint_damping",
    "armature",
    "actuator_gain",
    "object_size",
)
SENSING_PARAMS = ("action_latency", "observation_latency", "observation_noise")
OBJECT_PARAMS = ("object_mass", "object_size")

# name: space, nominal, hard limits, step. "log" steps multiply a boundary by exp(step) (scale
# factors: a 10% step is as far from 1 upward as downward); "int" steps are control steps.
# The hard limits reach well past the hand-set defaults (configs/randomization/*.yaml), so ADR can
# end wider than them; they stop where the task stops being physical (a Panda with 0.4x its
# servo stiffness sags under its own weight; 3 steps are 120 ms of delay).
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "link_mass": {"space": "log", "nominal": 1.0, "hard": [0.25, 4.0], "step": 0.1},
    "object_mass": {"space": "log", "nominal": 1.0, "hard": [0.25, 4.0], "step": 0.1},
    "friction": {"space": "log", "nominal": 1.0, "hard": [0.2, 3.0], "step": 0.05},
    "joint_damping": {"space": "log", "nominal": 1.0, "hard": [0.1, 10.0], "step": 0.1},
    "armature": {"space": "log", "nominal": 1.0, "hard": [0.25, 4.0], "step": 0.1},
    "actuator_gain": {"space": "log", "nominal": 1.0, "hard": [0.4, 2.5], "step": 0.05},
    "object_size": {"space": "log", "nominal": 1.0, "hard": [0.8, 1.2], "step": 0.01},
    "action_latency": {"space": "int", "nominal": 0, "hard": [0, 3], "step": 1},
    "observation_latency": {"space": "int", "nominal": 0, "hard": [0, 3], "step": 1},
    # A multiplier of the task's default per-step sensor noise (configs/randomization/<task>.yaml).
    "observation_noise": {"space": "linear", "nominal": 0.0, "hard": [0.0, 5.0], "step": 0.25},
}
DEFAULT_RULE = {
    "buffer_size": 20,  # episodes per boundary decision (OpenAI 2019 use a buffer per boundary)
    "boundary_prob": 0.5,  # share of episodes spent on a boundary (OpenAI 2019: p_b = 0.5)
    "success_high": 0.8,  # widen at or above this boundary success rate
    "success_low": 0.4,  # narrow at or below it
    # 0: pick the evaluated boundary uniformly (OpenAI 2019). k > 0: weight each boundary by
    # 1 + k * (success_high - its last decision's success), so the weakest get more practice.
    "boundary_focus": 0.0,
}
_TOL = 1e-9


class AdrConfigError(ValueError):
    """ADR settings that cannot be used; the message names the key."""


# ------------------------------------------------------------------------------------ settings
@dataclasses.dataclass(frozen=True)
class ParamSpec:
    name: str
    space: str
    nominal: float
    hard_low: float
    hard_high: float
    step: float
    init: tuple[float, float]

    def movable(self, side: str) -> bool:
        """Whether the hard limit leaves this boundary room to move at all."""
        limit = self.hard_low if side == "low" else self.hard_high
        return abs(limit - self.nominal) > _TOL

    def to_dict(self) -> dict:
        return {
            "space": self.space,
            "nominal": self.nominal,
            "hard": [self.hard_low, self.hard_high],
            "step": self.step,
            "init": list(self.init),
        }


@dataclasses.dataclass(frozen=True)
class AdrSettings:
    params: tuple[ParamSpec, ...]
    buffer_size: int = DEFAULT_RULE["buffer_size"]
    boundary_prob: float = DEFAULT_RULE["boundary_prob"]
    success_high: float = DEFAULT_RULE["success_high"]
    success_low: float = DEFAULT_RULE["success_low"]
    boundary_focus: float = DEFAULT_RULE["boundary_focus"]

    def param(self, name: str) -> ParamSpec:
        return next(p for p in self.params if p.name == name)

    def to_dict(self) -> dict:
        return {
            "buffer_size": self.buffer_size,
            "boundary_prob": self.boundary_prob,
            "success_high": self.success_high,
            "success_low": self.success_low,
            "boundary_focus": self.boundary_focus,
            # A quantity left out is written as null, so the dict reads back to these settings.
            "params": {
                name: self.param(name).to_dict() if name in self.names else None
                for name in DEFAULT_PARAMS
            },
        }

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any] | None, task: str, source: str = "ADR settings"
    ) -> AdrSettings:
        """``d`` merged over the defaults (per parameter and key); a parameter set to null is
        left to the base randomization. Object parameters are dropped for Reach (no object)."""
        d = dict(d or {})
        unknown = set(d) - set(DEFAULT_RULE) - {"params"}
        if unknown:
            raise AdrConfigError(
                f"{source}: unknown key(s) {sorted(unknown)}; allowed: {[*DEFAULT_RULE, 'params']}"
            )
        rule = {**DEFAULT_RULE, **{k: d[k] for k in DEFAULT_RULE if k in d}}
        buffer_size = rule["buffer_size"]
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise AdrConfigError(f"{source}: buffer_size={buffer_size!r}: use an integer >= 1")
        for key in ("boundary_prob", "success_high", "success_low"):
            v = rule[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise AdrConfigError(f"{source}: {key}={v!r}: use a number in [0, 1]")
        focus = rule["boundary_focus"]
        if isinstance(focus, bool) or not isinstance(focus, (int, float)) or not 0 <= focus <= 100:
            raise AdrConfigError(
                f"{source}: boundary_focus={focus!r}: use a number in [0, 100] (0: uniform)"
            )
        if not rule["success_low"] < rule["success_high"]:
            raise AdrConfigError(
                f"{source}: success_low={rule['success_low']} must be below "
                f"success_high={rule['success_high']}"
            )
        over = d.get("params") or {}
        if not isinstance(over, Mapping):
            raise AdrConfigError(f"{source}: params: expected a mapping name -> settings")
        bad = set(over) - set(DEFAULT_PARAMS)
        if bad:
            raise AdrConfigError(
                f"{source}: params: unknown quantity {sorted(bad)}; known: {list(DEFAULT_PARAMS)}"
            )
        params = []
        for name, default in DEFAULT_PARAMS.items():
            if name in OBJECT_PARAMS and not registry.get(task).has_object:
                continue
            if name in over and over[name] is None:
                continue
            spec = {**default, **(over.get(name) or {})}
            params.append(_parse_param(name, spec, f"{source}: params.{name}"))
        if not params:
            raise AdrConfigError(f"{source}: params: every quantity is switched off")
        return cls(
            params=tuple(params),
            buffer_size=int(buffer_size),
            boundary_prob=float(rule["boundary_prob"]),
            success_high=float(rule["success_high"]),
            success_low=float(rule["success_low"]),
            boundary_focus=float(focus),
        )


def _parse_param(name: str, spec: Mapping[str, Any], where: str) -> ParamSpec:
    extra = set(spec) - {"space", "nominal", "hard", "step", "init"}
    if extra:
        raise AdrConfigError(f"{where}: unknown key(s) {sorted(extra)}")
    space = spec["space"]
    if space not in SPACES:
        raise AdrConfigError(f"{where}.space: {space!r} is not one of {SPACES}")
    if name in PHYSICS_PARAMS and space == "int":
        raise AdrConfigError(f"{where}.space: a scale factor cannot be 'int'")
    if name in ("action_latency", "observation_latency") and space != "int":
        raise AdrConfigError(f"{where}.space: latency is counted in control steps: use 'int'")
    nominal = _num(spec["nominal"], f"{where}.nominal")
    hard = spec["hard"]
    if not isinstance(hard, (list, tuple)) or len(hard) != 2:
        raise AdrConfigError(f"{where}.hard: expected [low, high], got {hard!r}")
    lo, hi = _num(hard[0], f"{where}.hard"), _num(hard[1], f"{where}.hard")
    if not lo <= nominal <= hi:
        raise AdrConfigError(f"{where}.hard: [{lo}, {hi}] must contain nominal {nominal}")
    if space == "log" and lo <= 0:
        raise AdrConfigError(f"{where}.hard: a log-space scale factor needs a low limit > 0")
    if lo < 0:
        raise AdrConfigError(f"{where}.hard: {name} cannot be negative ({lo})")
    if name == "action_latency" or name == "observation_latency":
        if hi > 10 or lo != int(lo) or hi != int(hi):
            raise AdrConfigError(f"{where}.hard: whole control steps, at most 10")
    step = _num(spec["step"], f"{where}.step")
    if step <= 0 or (space == "int" and step != int(step)):
        raise AdrConfigError(f"{where}.step: {step!r}: use a positive (whole, for int) step")
    init = spec.get("init", [nominal, nominal])
    if not isinstance(init, (list, tuple)) or len(init) != 2:
        raise AdrConfigError(f"{where}.init: expected [low, high], got {init!r}")
    i0, i1 = _num(init[0], f"{where}.init"), _num(init[1], f"{where}.init")
    if not lo <= i0 <= nominal <= i1 <= hi:
        raise AdrConfigError(
            f"{where}.init: [{i0}, {i1}] must contain nominal {nominal} and stay inside the "
            f"hard limits [{lo}, {hi}]"
        )
    return ParamSpec(name, space, nominal, lo, hi, step, (i0, i1))


def _num(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise AdrConfigError(f"{where}: expected a finite number, got {v!r}")
    return float(v)


def load_settings(spec: str | os.PathLike | Mapping | None, task: str) -> AdrSettings:
    """``--dr`` value: ``"adr"`` (the defaults), a YAML path, or a dict."""
    if spec is None or spec == "adr":
        return AdrSettings.from_dict({}, task)
    if isinstance(spec, Mapping):
        return AdrSettings.from_dict(spec, task)
    path = os.fspath(spec)
    if not os.path.isfile(path):
        raise AdrConfigError(
            f"--dr {path!r}: not 'adr' and no such file; use --dr adr, or a YAML file of ADR "
            f"settings (see docs/transfer.md)"
        )
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, Mapping):
        raise AdrConfigError(f"{path}: expected a mapping of ADR settings")
    return AdrSettings.from_dict(data, task, source=path)


# ------------------------------------------------------------------------------------ state
@dataclasses.dataclass(frozen=True)
class AdrUpdate:
    """One boundary decision: ``action`` is widen, narrow, or keep (also at a limit)."""

    boundary: str
    success: float
    episodes: int
    action: str
    low: float
    high: float


class AdrState:
    """Current ranges and per-boundary success buffers, with OpenAI's update rule.

    A boundary is named ``"<quantity>:low"`` or ``"<quantity>:high"``.
    """

    def __init__(
        self,
        settings: AdrSettings,
        ranges: Mapping[str, list[float]] | None = None,
        buffers: Mapping[str, list[float]] | None = None,
        last_success: Mapping[str, float] | None = None,
    ) -> None:
        self.settings = settings
        self.ranges: dict[str, list[float]] = {p.name: list(p.init) for p in settings.params}
        for name, (lo, hi) in (ranges or {}).items():
            if name in self.ranges:
                p = settings.param(name)
                self.ranges[name] = [
                    float(min(max(lo, p.hard_low), p.nominal)),
                    float(max(min(hi, p.hard_high), p.nominal)),
                ]
        self.buffers: dict[str, list[float]] = {b: [] for b in self.boundaries}
        for b, values in (buffers or {}).items():
            if b in self.buffers:
                self.buffers[b] = [float(v) for v in values]
        # Each boundary's success at its last decision (for boundary_focus).
        self.last_success: dict[str, float] = {
            b: float(v) for b, v in (last_success or {}).items() if b in self.buffers
        }

    @property
    def boundaries(self) -> list[str]:
        """The boundaries that can move (a hard limit equal to nominal pins one)."""
        return [
            f"{p.name}:{side}"
            for p in self.settings.params
            for side in ("low", "high")
            if p.movable(side)
        ]

    def value(self, boundary: str) -> float:
        name, side = boundary.split(":")
        return self.ranges[name][0 if side == "low" else 1]

    def record(self, boundary: str, value: float, success: float) -> AdrUpdate | None:
        """Add one episode evaluated at ``boundary`` = ``value``. Episodes that ran at a value
        the boundary has since left (a decision came in while they ran) are dropped."""
        if boundary not in self.buffers or abs(self.value(boundary) - value) > 1e-6:
            return None
        buf = self.buffers[boundary]
        buf.append(float(success))
        if len(buf) < self.settings.buffer_size:
            return None
        mean = float(np.mean(buf))
        n = len(buf)
        buf.clear()
        self.last_success[boundary] = mean
        if mean >= self.settings.success_high:
            action = "widen" if self._move(boundary, outward=True) else "keep"
        elif mean <= self.settings.success_low:
            action = "narrow" if self._move(boundary, outward=False) else "keep"
        else:
            action = "keep"
        name = boundary.split(":")[0]
        lo, hi = self.ranges[name]
        return AdrUpdate(boundary, mean, n, action, lo, hi)

    def _move(self, boundary: str, outward: bool) -> bool:
        name, side = boundary.split(":")
        p = self.settings.param(name)
        i = 0 if side == "low" else 1
        old = self.ranges[name][i]
        sign = (-1 if side == "low" else 1) * (1 if outward else -1)
        if p.space == "log":
            new = old * math.exp(sign * p.step)
        else:
            new = old + sign * p.step
        # Outward stops at the hard limit, inward at nominal (a range always holds nominal).
        if side == "low":
            new = max(p.hard_low, new) if outward else min(p.nominal, new)
        else:
            new = min(p.hard_high, new) if outward else max(p.nominal, new)
        new = round(new, 6) if p.space != "int" else float(round(new))
        if abs(new - old) <= _TOL:
            return False
        self.ranges[name][i] = new
        return True

    def boundary_weights(self) -> np.ndarray:
        """Relative chance of each of :attr:`boundaries` to be evaluated: 1 each, plus
        ``boundary_focus`` times its shortfall below ``success_high`` at its last decision."""
        s = self.settings
        return np.array(
            [
                1.0 + s.boundary_focus * max(0.0, s.success_high - self.last_success.get(b, 1.0))
                for b in self.boundaries
            ]
        )

    def nats_per_dimension(self) -> float:
        """OpenAI's summary of ADR's entropy: the mean log width of the ranges (int and linear
        quantities count their width plus one step, so a point is not minus infinity)."""
        widths = []
        for p in self.settings.params:
            lo, hi = self.ranges[p.name]
            if p.space == "log":
                widths.append(math.log(hi / lo) + p.step)
            else:
                widths.append((hi - lo) / p.step + 1)
        return float(np.mean(np.log(widths)))

    def sample_episode(
        self, rng: np.random.Generator, base: RandomizationConfig | None, noise_ref: Mapping
    ) -> tuple[RandomizationConfig, str | None, float]:
        """This episode's randomization: maybe one boundary pinned, the rest from their ranges.
        Returns (config, boundary or None, the boundary's value)."""
        boundary, value = None, math.nan
        bounds = self.boundaries
        if bounds and rng.random() < self.settings.boundary_prob:
            if self.settings.boundary_focus > 0:
                w = self.boundary_weights()
                boundary = bounds[int(rng.choice(len(bounds), p=w / w.sum()))]
            else:
                boundary = bounds[int(rng.integers(len(bounds)))]
            value = self.value(boundary)
        return self.episode_config(rng, base, noise_ref, boundary), boundary, value

    def episode_config(
        self,
        rng: np.random.Generator,
        base: RandomizationConfig | None,
        noise_ref: Mapping,
        boundary: str | None = None,
    ) -> RandomizationConfig:
        """An episode's randomization with ``boundary`` (if any) pinned at its value and every
        other quantity from its range; the rest of ``base`` unchanged."""
        pinned, value = None, math.nan
        if boundary is not None:
            if boundary not in self.boundaries:
                raise AdrConfigError(
                    f"{boundary!r} is not a movable boundary; known: {', '.join(self.boundaries)}"
                )
            pinned, value = boundary.split(":")[0], self.value(boundary)
        base = base or RandomizationConfig()
        physics = dict(base.physics)
        latency = {"action_latency": base.action_latency,
                   "observation_latency": base.observation_latency}  # fmt: skip
        noise = dict(base.observation_noise)
        for p in self.settings.params:
            lo, hi = (value, value) if p.name == pinned else self.ranges[p.name]
            if p.name in PHYSICS_PARAMS:
                dist = "loguniform" if p.space == "log" else "uniform"
                physics[p.name] = Range(dist, "scale", low=lo, high=hi)
            elif p.name in latency:
                latency[p.name] = (int(lo), int(hi))
            else:  # observation_noise: one multiplier per episode for every sensor
                m = lo if hi <= lo else float(rng.uniform(lo, hi))
                noise = {k: float(std) * m for k, std in noise_ref.items()}
        return dataclasses.replace(base, physics=physics, observation_noise=noise, **latency)

    def to_dict(self) -> dict:
        return {
            "ranges": {k: list(v) for k, v in self.ranges.items()},
            "buffers": {k: list(v) for k, v in self.buffers.items()},
            "last_success": dict(self.last_success),
            "nats_per_dimension": round(self.nats_per_dimension(), 6),
        }


# ------------------------------------------------------------------------------------ env side
def set_env_randomization(env: Any, config: RandomizationConfig | None) -> None:
    """Make ``env`` sample ``config`` from its next reset on, without rebuilding it. The
    randomizer keeps the nominal model it copied when first made, so configs never compound."""
    base = env.unwrapped
    base.randomization_config = config
    if config is None:
        if base._randomizer is not None:
            base._randomizer.restore()
            base._randomizer = None
        return
    if base._randomizer is None:
        base._randomizer = DomainRandomizer(base.model, base.ids, config)
    else:
        base._randomizer.config = config


def ranges_of_config(config: RandomizationConfig) -> dict[str, list[float]]:
    """A hand-set randomization's ranges of ADR's quantities, written as ADR ranges (sensor
    noise: x0-1 of the default, which a hand-set configuration applies at x1; quantities it
    draws from a normal distribution, or not at all, are left out)."""
    ranges = {k: list(r.bounds()) for k, r in config.physics.items()
              if k in PHYSICS_PARAMS and r.dist != "normal"}  # fmt: skip
    ranges.update(action_latency=list(config.action_latency),
                  observation_latency=list(config.observation_latency),
                  observation_noise=[0.0, 1.0])  # fmt: skip
    return ranges


def default_noise(task: str) -> dict[str, float]:
    """The task's default per-step sensor noise stds (the unit of ``observation_noise``)."""
    cfg = load_config("default", task)
    return dict(cfg.observation_noise) if cfg is not None else {}


try:
    import gymnasium as gym

    _Wrapper = gym.Wrapper
except ImportError:  # pragma: no cover - gymnasium is a core dependency
    _Wrapper = object


class AdrWrapper(_Wrapper):
    """Draws each episode's randomization from the ADR ranges; ``info["adr_boundary"]`` is
    ``(boundary, value)`` when the episode evaluates a boundary, else None."""

    def __init__(
        self,
        env: Any,
        settings: AdrSettings,
        ranges: Mapping[str, list[float]] | None = None,
        base: RandomizationConfig | None = None,
        seed: int | None = None,
        last_success: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(env)
        self.adr = AdrState(settings, ranges, last_success=last_success)
        self.base = base
        self.noise_ref = default_noise(env.unwrapped.task)
        self.adr_rng = np.random.default_rng(seed)
        self._boundary: tuple[str, float] | None = None

    def adr_set_ranges(
        self, ranges: Mapping[str, list[float]], last_success: Mapping[str, float] | None = None
    ) -> None:
        """New ranges (and, for ``boundary_focus``, the boundaries' last successes) from the
        training process; they apply from the next reset."""
        self.adr = AdrState(self.adr.settings, ranges, last_success=last_success)

    def adr_ranges(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.adr.ranges.items()}

    def reset(self, **kwargs: Any):
        cfg, boundary, value = self.adr.sample_episode(self.adr_rng, self.base, self.noise_ref)
        set_env_randomization(self.env, cfg)
        self._boundary = (boundary, value) if boundary else None
        obs, info = self.env.reset(**kwargs)
        info["adr_boundary"] = self._boundary
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["adr_boundary"] = self._boundary
        return obs, reward, terminated, truncated, info


class AdrEnvFactory:
    """Picklable: wraps an env factory (SubprocVecEnv sends it to each worker)."""

    def __init__(
        self,
        inner: Callable[[], Any],
        settings: dict,
        task: str,
        ranges: dict,
        base: dict | None,
        seed: int | None,
        last_success: dict | None = None,
    ) -> None:
        self.inner, self.settings, self.task = inner, settings, task
        self.ranges, self.base, self.seed = ranges, base, seed
        self.last_success = last_success

    def __call__(self) -> AdrWrapper:
        base = RandomizationConfig.from_dict(self.base) if self.base else None
        settings = AdrSettings.from_dict(self.settings, self.task)
        return AdrWrapper(
            self.inner(), settings, self.ranges, base, self.seed, last_success=self.last_success
        )


# ------------------------------------------------------------------------------------ training
def task_of_config(cfg: Mapping) -> str:
    return registry.get(cfg["env_id"]).key


def init_run(path: str, cfg: Mapping, spec: str | os.PathLike | Mapping) -> AdrSettings:
    """Mark the run directory ``path`` as an ADR run: writes ``RUN/adr/settings.json``."""
    settings = load_settings(spec, task_of_config(cfg))
    atomic_write_text(
        os.path.join(path, ADR_DIR, SETTINGS_FILE), json.dumps(settings.to_dict(), indent=1)
    )
    return settings


def read_ranges(run_path: str) -> dict[str, list[float]] | None:
    """The newest saved ADR ranges of a run (None: not an ADR run, or none saved yet)."""
    p = os.path.join(run_path, ADR_DIR, RANGES_FILE)
    if not os.path.isfile(p):
        return None
    with open(p) as f:
        return json.load(f)["ranges"]


def _state_file(timesteps: int) -> str:
    return f"state_{int(timesteps)}.json"


try:
    from stable_baselines3.common.callbacks import BaseCallback as _BaseCallback
except ImportError:  # pragma: no cover - training needs SB3 anyway
    _BaseCallback = object


class AdrCallback(_BaseCallback):
    """The training side of ADR (see the module docstring). ``train.py`` makes one with
    :meth:`for_run`, wraps the env factories with :meth:`wrap_factory`, and calls
    :meth:`save_state` before every checkpoint."""

    def __init__(
        self, run_path: str, settings: AdrSettings, task: str, base: dict | None,
        state: AdrState, events: list[dict], start_steps: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.run_path, self.settings, self.task, self.base = run_path, settings, task, base
        self.state, self.events, self.start_steps = state, events, start_steps
        self.boundary_episodes = 0

    @classmethod
    def for_run(cls, path: str, cfg: Mapping, resume_from: Mapping | None) -> AdrCallback | None:
        """None unless ``path`` is an ADR run (``RUN/adr/settings.json``). Resuming restores the
        ranges and buffers saved with the checkpoint ``resume_from`` names."""
        sp = os.path.join(path, ADR_DIR, SETTINGS_FILE)
        if not os.path.isfile(sp):
            return None
        task = task_of_config(cfg)
        with open(sp) as f:
            settings = AdrSettings.from_dict(json.load(f), task, source=sp)
        base = cfg.get("randomization")
        events_path = os.path.join(path, ADR_DIR, EVENTS_FILE)
        if resume_from is None:
            state = AdrState(settings)
            cb = cls(path, settings, task, base, state, [], 0)
            for p in settings.params:
                lo, hi = state.ranges[p.name]
                cb.events.append(
                    {"timesteps": 0, "boundary": p.name, "success": "", "episodes": 0,
                     "action": "start", "low": lo, "high": hi}
                )  # fmt: skip
            cb._write_events()
            return cb
        steps = int(resume_from["timesteps"])
        state_path = os.path.join(path, ADR_DIR, _state_file(steps))
        if not os.path.isfile(state_path):
            raise AdrConfigError(
                f"{path}: the checkpoint at {steps} steps has no ADR state "
                f"({os.path.relpath(state_path, path)} missing); the run cannot resume its ranges"
            )
        with open(state_path) as f:
            saved = json.load(f)
        state = AdrState(settings, saved["ranges"], saved.get("buffers"), saved.get("last_success"))
        events = []
        if os.path.isfile(events_path):
            with open(events_path, newline="") as f:
                events = [r for r in csv.DictReader(f) if int(float(r["timesteps"])) <= steps]
        cb = cls(path, settings, task, base, state, events, steps)
        cb._write_events()  # drop the rows the kill threw away, as train.py does for its logs
        return cb

    def wrap_factory(self, factory: Callable[[], Any]) -> AdrEnvFactory:
        return AdrEnvFactory(
            factory,
            self.settings.to_dict(),
            self.task,
            copy.deepcopy(self.state.ranges),
            self.base,
            getattr(factory, "seed", None),
            # A resumed run's workers start with the saved weights of boundary_focus too.
            dict(self.state.last_success),
        )

    def _on_step(self) -> bool:
        infos, dones = self.locals.get("infos", ()), self.locals.get("dones", ())
        updates = []
        for info, done in zip(infos, dones, strict=True):
            if not done or not info.get("adr_boundary"):
                continue
            boundary, value = info["adr_boundary"]
            self.boundary_episodes += 1
            u = self.state.record(boundary, value, float(info.get("is_success", 0.0) > 0.5))
            if u is not None:
                updates.append(u)
        if updates:
            n = self.num_timesteps
            for u in updates:
                self.events.append({"timesteps": n, **dataclasses.asdict(u)})
            # With boundary_focus every decision changes the boundaries' weights.
            if self.settings.boundary_focus > 0 or any(u.action != "keep" for u in updates):
                self.training_env.env_method(
                    "adr_set_ranges",
                    copy.deepcopy(self.state.ranges),
                    dict(self.state.last_success),
                )
            self._write_events()
        return True

    def _on_rollout_end(self) -> None:
        for name, (lo, hi) in self.state.ranges.items():
            self.logger.record(f"adr/{name}_low", lo)
            self.logger.record(f"adr/{name}_high", hi)
        self.logger.record("adr/nats_per_dimension", self.state.nats_per_dimension())
        self.logger.record("adr/boundary_episodes", self.boundary_episodes)

    def _write_events(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EVENT_COLUMNS, lineterminator="\n")
        w.writeheader()
        for row in self.events:
            w.writerow({k: _fmt(row.get(k, "")) for k in EVENT_COLUMNS})
        atomic_write_text(os.path.join(self.run_path, ADR_DIR, EVENTS_FILE), buf.getvalue())

    def save_state(self, timesteps: int) -> None:
        """Called before each checkpoint: ``state_<N>.json`` is complete before ``latest.json``
        can name step N, so a resumed run always finds the ranges of its checkpoint."""
        d = {"timesteps": int(timesteps), **self.state.to_dict()}
        text = json.dumps(d, indent=1)
        adr_dir = os.path.join(self.run_path, ADR_DIR)
        atomic_write_text(os.path.join(adr_dir, _state_file(timesteps)), text)
        atomic_write_text(os.path.join(adr_dir, RANGES_FILE), text)
        self._prune(adr_dir, int(timesteps))

    def _prune(self, adr_dir: str, current: int) -> None:
        """Keep the states of the checkpoints that still exist (rundir keeps the newest two)."""
        ckdir = os.path.join(self.run_path, "checkpoints")
        models = set(os.listdir(ckdir)) if os.path.isdir(ckdir) else set()
        for name in os.listdir(adr_dir):
            if name.startswith("state_") and name.endswith(".json"):
                n = int(name[len("state_") : -len(".json")])
                if n != current and f"model_{n}.zip" not in models:
                    os.unlink(os.path.join(adr_dir, name))


def _fmt(v: Any) -> Any:
    return round(v, 6) if isinstance(v, float) else v


# ------------------------------------------------------------------------------------ plotting
def plot_ranges(run_path: str, out_png: str) -> None:
    """The evolution of a run's ADR ranges (``RUN/adr/ranges.csv``), one panel per quantity,
    with the task's hand-set default range shaded for comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from manip_rl.fileio import atomic_path
    from manip_rl.policies.rundir import load_run

    events_path = os.path.join(run_path, ADR_DIR, EVENTS_FILE)
    if not os.path.isfile(events_path):
        raise AdrConfigError(f"{run_path}: no {ADR_DIR}/{EVENTS_FILE}; is it a --dr adr run?")
    with open(events_path, newline="") as f:
        rows = list(csv.DictReader(f))
    task = task_of_config(load_run(run_path).config)
    default = load_config("default", task)
    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in rows:
        name = r["boundary"].split(":")[0]
        series.setdefault(name, []).append((int(r["timesteps"]), float(r["low"]), float(r["high"])))
    end = max(int(r["timesteps"]) for r in rows) if rows else 0
    names = list(series)
    cols = min(5, max(1, len(names)))
    nrows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 2.6 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        pts = series[name] + [(end, *series[name][-1][1:])]
        t = [p[0] for p in pts]
        ax.step(t, [p[1] for p in pts], where="post", color="C0")
        ax.step(t, [p[2] for p in pts], where="post", color="C0")
        ax.fill_between(t, [p[1] for p in pts], [p[2] for p in pts], step="post", alpha=0.25)
        if default is not None:
            if name in default.physics and default.physics[name].dist != "normal":
                ax.axhspan(*default.physics[name].bounds(), color="0.85", zorder=0)
            elif name in ("action_latency", "observation_latency"):
                ax.axhspan(*getattr(default, name), color="0.85", zorder=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("timesteps", fontsize=8)
        ax.tick_params(labelsize=7)
    for extra in list(axes.flat)[len(names) :]:
        extra.set_visible(False)
    fig.suptitle(f"ADR ranges of {os.path.basename(os.path.normpath(run_path))} "
                 f"(grey: hand-set default range)")  # fmt: skip
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
