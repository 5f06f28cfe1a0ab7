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

The pieces (one module each, :mod:`manip_rl.transfer`):

- :class:`AdrSettings`: what is randomized, with which steps and limits (``--dr adr`` ships
  :data:`DEFAULT_PARAMS`; ``--dr FILE.yaml`` merges a YAML file over them). Here.
- :class:`AdrState`: the ranges and the buffers, with the update rule (no environment in it).
  Here.
- :class:`~manip_rl.transfer.adr_env.AdrWrapper`: in each environment process, turns the
  ranges into a :class:`~manip_rl.envs.randomization.RandomizationConfig` per episode and
  reports in ``info["adr_boundary"]`` which boundary (and at which value) the episode
  evaluates.
- :class:`~manip_rl.transfer.adr_callback.AdrCallback`: in the training process, collects
  episode success per boundary from the vector env's ``infos``, updates the ranges, pushes them
  into every environment process with ``env_method`` (SubprocVecEnv included), logs them
  through SB3's logger (TensorBoard and ``progress.csv``) and into ``RUN/adr/ranges.csv``, and
  saves them with every checkpoint (``RUN/adr/state_<N>.json``) so ``--resume`` continues from
  the same ranges.
- :mod:`~manip_rl.transfer.adr_run`: the files of an ADR run; :mod:`~manip_rl.transfer.adr_plot`:
  the plot of a run's ranges.

This module imports neither Gymnasium nor SB3.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import yaml

from manip_rl.envs import registry
from manip_rl.envs.randomization import RandomizationConfig, Range

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
