"""Declarative domain randomization: ranges in YAML (or dicts), checked, sampled on every reset,
written into the compiled MjModel without recompiling, and undone on the next reset.

A configuration has four groups::

    physics:            # each entry: {dist, op, range | mean+std}
      link_mass:  {dist: uniform, op: scale, range: [0.5, 1.5]}
    observation_noise:  # per-step Gaussian std, by sensor
      joint_pos: 0.001
    observation_bias:   # per-episode Gaussian std, by sensor
      object_pos: 0.005
    action_noise: 0.02  # Gaussian std in action units
    action_latency: [0, 1]       # control steps, inclusive, per episode
    observation_latency: [0, 1]

``dist`` is ``uniform``, ``loguniform`` or ``normal``; ``op`` is ``scale`` (nominal x sample),
``add`` (nominal + sample) or ``set`` (sample). Each quantity is sampled independently per element
(per body, per geom, per joint, per actuator), except ``object_size`` (one factor for the whole
cube, so it stays a cube).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np
import yaml

from manip_rl.envs.scene import SceneIds
from manip_rl.policy_io import SENSOR_FIELDS

DISTRIBUTIONS = ("uniform", "loguniform", "normal")
OPERATIONS = ("scale", "add", "set")
# What each physics key randomizes. "positive" quantities must stay > 0 after the op.
PHYSICS_KEYS = {
    "link_mass": "mass of each arm link and finger (inertia scaled alike)",
    "object_mass": "mass of the object (inertia scaled alike)",
    "friction": "sliding friction of the table, the object and the fingers",
    "joint_damping": "viscous damping of each arm joint",
    "armature": "rotor inertia (armature) of each arm joint",
    "frictionloss": "dry friction of each arm joint",
    "actuator_gain": "position-servo stiffness kp of each arm actuator",
    "object_size": "edge length of the cube (one factor for all three edges)",
    "gravity": "gravity vector, per axis (m/s^2)",
}
_NON_NEGATIVE = {
    "link_mass",
    "object_mass",
    "friction",
    "joint_damping",
    "armature",
    "frictionloss",
    "actuator_gain",
    "object_size",
}
SENSOR_KEYS = tuple(name for name, _ in SENSOR_FIELDS)  # the sensors policy_io defines
TOP_KEYS = (
    "physics",
    "observation_noise",
    "observation_bias",
    "action_noise",
    "action_latency",
    "observation_latency",
)
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "randomization")


class RandomizationConfigError(ValueError):
    """A randomization configuration that cannot be used; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Range:
    dist: str
    op: str
    low: float = 0.0
    high: float = 0.0
    mean: float = 0.0
    std: float = 0.0

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        if self.dist == "uniform":
            return rng.uniform(self.low, self.high, size)
        if self.dist == "loguniform":
            return np.exp(rng.uniform(np.log(self.low), np.log(self.high), size))
        return rng.normal(self.mean, self.std, size)

    def bounds(self) -> tuple[float, float]:
        """The support (3 std for a normal), for the physical-sense check."""
        if self.dist == "normal":
            return self.mean - 3 * self.std, self.mean + 3 * self.std
        return self.low, self.high

    def to_dict(self) -> dict:
        if self.dist == "normal":
            return {"dist": self.dist, "op": self.op, "mean": self.mean, "std": self.std}
        return {"dist": self.dist, "op": self.op, "range": [self.low, self.high]}


@dataclasses.dataclass(frozen=True)
class RandomizationConfig:
    physics: Mapping[str, Range] = dataclasses.field(default_factory=dict)
    observation_noise: Mapping[str, float] = dataclasses.field(default_factory=dict)
    observation_bias: Mapping[str, float] = dataclasses.field(default_factory=dict)
    action_noise: float = 0.0
    action_latency: tuple[int, int] = (0, 0)
    observation_latency: tuple[int, int] = (0, 0)

    @property
    def max_action_latency(self) -> int:
        return self.action_latency[1]

    @property
    def max_observation_latency(self) -> int:
        return self.observation_latency[1]

    def to_dict(self) -> dict:
        return {
            "physics": {k: r.to_dict() for k, r in self.physics.items()},
            "observation_noise": dict(self.observation_noise),
            "observation_bias": dict(self.observation_bias),
            "action_noise": self.action_noise,
            "action_latency": list(self.action_latency),
            "observation_latency": list(self.observation_latency),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "configuration") -> RandomizationConfig:
        """Parse and check a configuration; every error names the offending key."""
        if not isinstance(d, Mapping):
            raise RandomizationConfigError(f"{source}: expected a mapping of {TOP_KEYS}")
        unknown = set(d) - set(TOP_KEYS)
        if unknown:
            raise RandomizationConfigError(
                f"{source}: unknown key(s) {sorted(unknown)}; allowed: {list(TOP_KEYS)}"
            )
        physics = {}
        if not isinstance(d.get("physics") or {}, Mapping):
            raise RandomizationConfigError(
                f"{source}: physics: expected a mapping quantity -> {{dist, op, range}}, got "
                f"{d['physics']!r}; known quantities: {sorted(PHYSICS_KEYS)} (held-out shift "
                f"sets such as heavy are files: manip_rl/configs/heldout/*.yaml)"
            )
        for key, spec in (d.get("physics") or {}).items():
            physics[key] = _parse_range(key, spec, source)
        noise = _parse_sensor_stds(d.get("observation_noise") or {}, "observation_noise", source)
        bias = _parse_sensor_stds(d.get("observation_bias") or {}, "observation_bias", source)
        action_noise = _non_negative(d.get("action_noise", 0.0), "action_noise", source)
        return cls(
            physics=physics,
            observation_noise=noise,
            observation_bias=bias,
            action_noise=action_noise,
            action_latency=_parse_latency(
                d.get("action_latency", [0, 0]), "action_latency", source
            ),
            observation_latency=_parse_latency(
                d.get("observation_latency", [0, 0]), "observation_latency", source
            ),
        )


def _parse_range(key: str, spec: Any, source: str) -> Range:
    where = f"{source}: physics.{key}"
    if key not in PHYSICS_KEYS:
        raise RandomizationConfigError(
            f"{where}: unknown physics quantity; known: {sorted(PHYSICS_KEYS)}"
        )
    if not isinstance(spec, Mapping):
        raise RandomizationConfigError(
            f"{where}: expected {{dist, op, range}} or {{dist, op, mean, std}}"
        )
    extra = set(spec) - {"dist", "op", "range", "mean", "std"}
    if extra:
        raise RandomizationConfigError(f"{where}: unknown key(s) {sorted(extra)}")
    dist, op = spec.get("dist", "uniform"), spec.get("op", "scale")
    if dist not in DISTRIBUTIONS:
        raise RandomizationConfigError(f"{where}.dist: {dist!r} is not one of {DISTRIBUTIONS}")
    if op not in OPERATIONS:
        raise RandomizationConfigError(f"{where}.op: {op!r} is not one of {OPERATIONS}")
    if dist == "normal":
        if "mean" not in spec or "std" not in spec:
            raise RandomizationConfigError(f"{where}: a normal distribution needs mean and std")
        r = Range(
            dist,
            op,
            mean=_number(spec["mean"], where + ".mean"),
            std=_number(spec["std"], where + ".std"),
        )
        if r.std <= 0:
            raise RandomizationConfigError(f"{where}.std: must be > 0, got {r.std}")
    else:
        rng = spec.get("range")
        if not isinstance(rng, (list, tuple)) or len(rng) != 2:
            raise RandomizationConfigError(f"{where}.range: expected [low, high], got {rng!r}")
        low, high = _number(rng[0], where + ".range"), _number(rng[1], where + ".range")
        if not low < high:
            raise RandomizationConfigError(
                f"{where}.range: empty or inverted range [{low}, {high}]; low must be < high"
            )
        if dist == "loguniform" and low <= 0:
            raise RandomizationConfigError(f"{where}.range: a loguniform range needs low > 0")
        r = Range(dist, op, low=low, high=high)
    lo, _ = r.bounds()
    # A scale or set that can reach zero or below, or an add that can subtract, would give a
    # quantity that must stay positive (a mass, a friction, a gain, a size) a meaningless value.
    if key in _NON_NEGATIVE and (lo <= 0 if op in ("scale", "set") else lo < 0):
        raise RandomizationConfigError(
            f"{where}: {PHYSICS_KEYS[key]} must stay positive, but {op} with lower bound "
            f"{lo:g} (3 std for a normal) can make it zero or negative; use a positive range"
        )
    return r


def _parse_sensor_stds(d: Any, group: str, source: str) -> dict[str, float]:
    if not isinstance(d, Mapping):
        raise RandomizationConfigError(f"{source}: {group}: expected a mapping sensor -> std")
    out = {}
    for key, std in d.items():
        if key not in SENSOR_KEYS:
            raise RandomizationConfigError(
                f"{source}: {group}.{key}: unknown sensor; known: {list(SENSOR_KEYS)}"
            )
        out[key] = _non_negative(std, f"{group}.{key}", source)
    return out


def _parse_latency(v: Any, key: str, source: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v, v]
    if (
        not isinstance(v, (list, tuple))
        or len(v) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    ):
        raise RandomizationConfigError(
            f"{source}: {key}: expected [min, max] control steps (integers)"
        )
    if v[0] < 0 or v[1] < v[0]:
        raise RandomizationConfigError(
            f"{source}: {key}: [{v[0]}, {v[1]}] is negative or inverted; use 0 <= min <= max"
        )
    if v[1] > 10:
        raise RandomizationConfigError(
            f"{source}: {key}: more than 10 control steps (0.4 s) of delay"
        )
    return int(v[0]), int(v[1])


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise RandomizationConfigError(f"{where}: expected a finite number, got {v!r}")
    return float(v)


def _non_negative(v: Any, key: str, source: str) -> float:
    x = _number(v, f"{source}: {key}")
    if x < 0:
        raise RandomizationConfigError(
            f"{source}: {key}: a standard deviation cannot be negative ({x})"
        )
    return x


def load_config(
    spec: str | os.PathLike | Mapping | RandomizationConfig | None, task: str
) -> RandomizationConfig | None:
    """Resolve a ``randomization=`` argument: None/"none"/False (off), "default" (the task's
    shipped ranges), a YAML path, a dict, or a :class:`RandomizationConfig`."""
    if spec is None or spec is False or spec == "none":
        return None
    if isinstance(spec, RandomizationConfig):
        return spec
    if isinstance(spec, Mapping):
        return RandomizationConfig.from_dict(spec)
    if spec is True or spec == "default":
        from manip_rl.envs import registry  # the task's spec names its default file

        spec = registry.get(task).randomization_path
    path = os.fspath(spec)
    if not os.path.isfile(path):
        raise RandomizationConfigError(
            f"randomization file {path!r} does not exist; pass 'default', 'none' or a YAML path"
        )
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else path
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise RandomizationConfigError(f"{where}: not valid YAML ({problem})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RandomizationConfigError(
            f"randomization file {path!r}: cannot be read ({e})"
        ) from None
    if not data:
        # An empty file is more likely a mistake than a wish for no randomization.
        raise RandomizationConfigError(
            f"randomization file {path!r} is empty; give ranges (see "
            f"manip_rl/configs/randomization/*.yaml), or turn randomization off explicitly "
            f"with `randomization: none` (--randomization none)"
        )
    return RandomizationConfig.from_dict(data, source=path)


@dataclasses.dataclass
class Sample:
    """One episode's draw. ``physics`` holds the per-element multipliers/values actually written."""

    physics: dict[str, np.ndarray]
    observation_bias: dict[str, np.ndarray]
    action_latency: int
    observation_latency: int

    def to_info(self) -> dict:
        return {
            **{k: v.copy() for k, v in self.physics.items()},
            **{f"bias_{k}": v.copy() for k, v in self.observation_bias.items()},
            "action_latency": self.action_latency,
            "observation_latency": self.observation_latency,
        }


_SENSOR_SIZES = dict(SENSOR_FIELDS)


class DomainRandomizer:
    """Samples a :class:`RandomizationConfig` and writes it into one MjModel.

    The nominal values are copied once at construction; :meth:`apply` always starts from them,
    so draws never compound and ``restore`` gives back the exact compiled model.
    """

    def __init__(self, model: mujoco.MjModel, ids: SceneIds, config: RandomizationConfig) -> None:
        self.model, self.ids, self.config = model, ids, config
        has_obj = ids.object_body >= 0
        fingers_geoms = np.flatnonzero(np.isin(model.geom_bodyid, ids.arm_bodies[-2:]))
        friction_geoms = [ids.table_geom, *fingers_geoms] + ([ids.object_geom] if has_obj else [])
        self._friction_geoms = np.array(friction_geoms)
        self._obj = ids.object_body
        self._nominal = {
            "body_mass": model.body_mass.copy(),
            "body_inertia": model.body_inertia.copy(),
            "geom_friction": model.geom_friction.copy(),
            "dof_damping": model.dof_damping.copy(),
            "dof_armature": model.dof_armature.copy(),
            "dof_frictionloss": model.dof_frictionloss.copy(),
            "actuator_gainprm": model.actuator_gainprm.copy(),
            "actuator_biasprm": model.actuator_biasprm.copy(),
            "geom_size": model.geom_size.copy(),
            "geom_rbound": model.geom_rbound.copy(),
            "geom_aabb": model.geom_aabb.copy(),
            "gravity": model.opt.gravity.copy(),
        }
        self._sizes = {
            "link_mass": len(ids.arm_bodies),
            "object_mass": 1 if has_obj else 0,
            "friction": len(self._friction_geoms),
            "joint_damping": 7,
            "armature": 7,
            "frictionloss": 7,
            "actuator_gain": 7,
            "object_size": 1 if has_obj else 0,
            "gravity": 3,
        }

    def sample(self, rng: np.random.Generator) -> Sample:
        physics = {}
        for key, r in self.config.physics.items():
            n = self._sizes[key]
            if n:
                physics[key] = r.sample(rng, n)
        bias = {
            k: rng.normal(0.0, s, _SENSOR_SIZES[k]) for k, s in self.config.observation_bias.items()
        }
        return Sample(
            physics=physics,
            observation_bias=bias,
            action_latency=int(
                rng.integers(self.config.action_latency[0], self.config.action_latency[1] + 1)
            ),
            observation_latency=int(
                rng.integers(
                    self.config.observation_latency[0], self.config.observation_latency[1] + 1
                )
            ),
        )

    def restore(self) -> None:
        m, n = self.model, self._nominal
        m.body_mass[:] = n["body_mass"]
        m.body_inertia[:] = n["body_inertia"]
        m.geom_friction[:] = n["geom_friction"]
        m.dof_damping[:] = n["dof_damping"]
        m.dof_armature[:] = n["dof_armature"]
        m.dof_frictionloss[:] = n["dof_frictionloss"]
        m.actuator_gainprm[:] = n["actuator_gainprm"]
        m.actuator_biasprm[:] = n["actuator_biasprm"]
        m.geom_size[:] = n["geom_size"]
        m.geom_rbound[:] = n["geom_rbound"]
        m.geom_aabb[:] = n["geom_aabb"]
        m.opt.gravity[:] = n["gravity"]

    def apply(self, sample: Sample) -> None:
        """Restore the nominal model, then write the sample into it."""
        self.restore()
        m, n, ids = self.model, self._nominal, self.ids
        for key, v in sample.physics.items():
            op = self.config.physics[key].op
            if key == "link_mass":
                b = ids.arm_bodies
                m.body_mass[b] = _op(op, n["body_mass"][b], v)
                m.body_inertia[b] = (
                    n["body_inertia"][b] * (m.body_mass[b] / n["body_mass"][b])[:, None]
                )
            elif key == "object_mass":
                m.body_mass[self._obj] = _op(op, n["body_mass"][self._obj], v[0])
            elif key == "friction":
                g = self._friction_geoms
                m.geom_friction[g, 0] = _op(op, n["geom_friction"][g, 0], v)
            elif key == "joint_damping":
                m.dof_damping[ids.arm_dof] = _op(op, n["dof_damping"][ids.arm_dof], v)
            elif key == "armature":
                m.dof_armature[ids.arm_dof] = _op(op, n["dof_armature"][ids.arm_dof], v)
            elif key == "frictionloss":
                m.dof_frictionloss[ids.arm_dof] = _op(op, n["dof_frictionloss"][ids.arm_dof], v)
            elif key == "actuator_gain":
                a = ids.arm_actuators
                kp = _op(op, n["actuator_gainprm"][a, 0], v)
                # A MuJoCo position servo is gain kp on ctrl and bias -kp on qpos: scale both.
                m.actuator_gainprm[a, 0] = kp
                m.actuator_biasprm[a, 1] = -kp
            elif key == "object_size":
                g = ids.object_geom
                s = _op(op, 1.0, v[0]) if op != "set" else v[0] / n["geom_size"][g, 0]
                m.geom_size[g] = n["geom_size"][g] * s
                m.geom_rbound[g] = n["geom_rbound"][g] * s
                m.geom_aabb[g] = n["geom_aabb"][g] * s
            elif key == "gravity":
                m.opt.gravity[:] = _op(op, n["gravity"], v)
        if "object_mass" in sample.physics or "object_size" in sample.physics:
            o = self._obj
            size_scale = m.geom_size[ids.object_geom, 0] / n["geom_size"][ids.object_geom, 0]
            m.body_inertia[o] = (
                n["body_inertia"][o] * (m.body_mass[o] / n["body_mass"][o]) * size_scale**2
            )


def _op(op: str, nominal: np.ndarray | float, v: np.ndarray | float) -> np.ndarray | float:
    if op == "scale":
        return nominal * v
    if op == "add":
        return nominal + v
    return v if np.ndim(nominal) == 0 else np.broadcast_to(v, np.shape(nominal)).copy()
