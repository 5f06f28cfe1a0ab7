"""The observation/action contract shared by the envs, the export and the ROS 2 bridge.

The most important rule of sim-to-real: the observation a policy sees on the robot is built by the
same code that built it in training, and its action is turned into joint targets by the same code.
This module is that code. It needs numpy and the robot descriptions (``manip_rl.robots``) only;
forward kinematics lives in :class:`manip_rl.robots.kinematics.Kinematics`, which imports MuJoCo
lazily.

Conventions
-----------
* Joint positions are in the **real Franka convention** (``panda_joint1..7``, zero as in Franka's
  datasheet), not in the convention of the MJCF the simulator loads. gymnasium-robotics' kitchen
  Franka model rotates the zero of joints 6 and 7 (by pi/2 and pi/4); :data:`SIM_JOINT_OFFSETS`
  converts, and only the simulator applies it. A policy therefore sees on a real arm exactly the
  joint values it saw in training.
* Gripper opening is the distance between the two fingers, in metres (0 .. 0.08).
* Positions are metres in the robot base frame; quaternions are ``w, x, y, z``.
* Actions are in ``[-1, 1]``; :func:`action_to_joint_targets` maps them to clipped joint targets.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from manip_rl.robots import PANDA
from manip_rl.robots.franka import SIM_MODEL_LOWER, SIM_MODEL_UPPER

PANDA_JOINT_NAMES: tuple[str, ...] = PANDA.joint_names
PANDA_FINGER_JOINT_NAMES: tuple[str, ...] = PANDA.finger_joint_names
# Simulator joint = robot joint - offset (gymnasium-robotics chain.xml rotates link6 by an extra
# pi/2 about z and link7 by pi/4; checked by forward kinematics in tests/test_policy_io.py).
SIM_JOINT_OFFSETS = np.asarray(PANDA.sim_joint_offsets).copy()
PANDA_HOME = np.asarray(PANDA.home).copy()
# Joint limits a policy is trained within: the tighter of Franka's datasheet and the simulated
# model's ranges (robot convention); the action mapper never commands outside them.
PANDA_JOINT_LOWER = np.maximum(PANDA.lower, SIM_MODEL_LOWER)
PANDA_JOINT_UPPER = np.minimum(PANDA.upper, SIM_MODEL_UPPER)
GRIPPER_MAX_OPENING = PANDA.gripper_max_opening  # metres between the fingers, Franka Hand datasheet

JOINT_DELTA = "joint_delta"
EE_DELTA = "ee_delta"
ACTION_MODES = (JOINT_DELTA, EE_DELTA)


@dataclasses.dataclass(frozen=True)
class ObsField:
    """One named block of the flat observation vector."""

    name: str
    size: int
    unit: str
    description: str


_FIELDS = {
    f.name: f
    for f in (
        ObsField("joint_pos", 7, "rad", "arm joint positions, Franka convention"),
        ObsField("joint_vel", 7, "rad/s", "arm joint velocities"),
        ObsField("gripper_opening", 1, "m", "distance between the fingers"),
        ObsField("ee_pos", 3, "m", "end-effector (TCP) position in the base frame"),
        ObsField("object_pos", 3, "m", "object position in the base frame"),
        ObsField("object_rel_pos", 3, "m", "object position minus end-effector position"),
        ObsField("object_quat", 4, "1", "object orientation, w x y z"),
        ObsField("prev_action", 0, "1", "the action applied at the previous step, in [-1, 1]"),
        ObsField("goal", 3, "m", "goal position in the base frame"),
    )
}


@dataclasses.dataclass(frozen=True)
class ObsLayout:
    """Ordered fields of a task's observation and of its goals.

    ``flat`` is the vector a policy file takes: SB3 flattens a Dict observation in sorted key
    order, so the flat vector is ``achieved_goal | desired_goal | observation``.
    """

    task: str
    observation: tuple[ObsField, ...]
    achieved_goal: ObsField
    desired_goal: ObsField

    @property
    def obs_dim(self) -> int:
        return sum(f.size for f in self.observation)

    @property
    def goal_dim(self) -> int:
        return self.achieved_goal.size

    @property
    def flat_dim(self) -> int:
        return self.obs_dim + 2 * self.goal_dim

    def flat_fields(self) -> list[dict]:
        """The flat vector's fields in order, as JSON-ready dicts (``start`` is the offset)."""
        out, start = [], 0
        parts = [("achieved_goal", self.achieved_goal), ("desired_goal", self.desired_goal)]
        parts += [("observation", f) for f in self.observation]
        for key, f in parts:
            out.append(
                {
                    "key": key,
                    "name": f.name,
                    "size": f.size,
                    "start": start,
                    "unit": f.unit,
                    "description": f.description,
                }
            )
            start += f.size
        return out

    @classmethod
    def from_json(cls, task: str, flat_fields: Sequence[Mapping]) -> ObsLayout:
        """The layout of a policy file's ``observation.fields`` (see :func:`layout_from_json`)."""
        return layout_from_json(task, flat_fields)

    def slices(self) -> dict[str, slice]:
        """Slices of each field inside the ``observation`` vector."""
        out, start = {}, 0
        for f in self.observation:
            out[f.name] = slice(start, start + f.size)
            start += f.size
        return out


@dataclasses.dataclass(frozen=True)
class ActionSpec:
    """How an action in [-1, 1] becomes joint targets."""

    mode: str
    joint_names: tuple[str, ...]
    joint_scale: float  # rad per step for a full action, joint_delta mode
    ee_scale: float  # metres per step for a full action, ee_delta mode
    lower: np.ndarray
    upper: np.ndarray
    home: np.ndarray
    gripper: bool
    # ee_delta: the lowest TCP height commanded, m in the base frame (None: no floor). A
    # displacement that would take the TCP lower is cut at this height, so a policy pressing
    # down rests the fingertips just above the table instead of dragging them across it.
    ee_z_min: float | None = None
    # ee_delta: per-step gain of the joints' pull towards ``home`` in the Jacobian's null space.
    # A 3-D displacement leaves 4 of the 7 joints free; without the pull they drift with every
    # step until a joint limit stalls the TCP.
    ee_posture_gain: float = 0.0

    @property
    def dim(self) -> int:
        arm = 7 if self.mode == JOINT_DELTA else 3
        return arm + (1 if self.gripper else 0)

    @functools.cached_property
    def joint_scale_array(self) -> np.ndarray:
        """``joint_scale`` as a 0-d array: numpy multiplies an array by one about 0.7 us faster
        than by a Python float (same result), and this runs in every step."""
        return np.array(self.joint_scale)

    @functools.cached_property
    def ee_scale_array(self) -> np.ndarray:
        """``ee_scale`` as a 0-d array (see :attr:`joint_scale_array`)."""
        return np.array(self.ee_scale)

    def to_json(self) -> dict:
        return {
            "mode": self.mode,
            "joint_names": list(self.joint_names),
            "gripper_joint_names": list(PANDA_FINGER_JOINT_NAMES) if self.gripper else [],
            "joint_scale_rad": self.joint_scale,
            "ee_scale_m": self.ee_scale,
            "lower": self.lower.tolist(),
            "upper": self.upper.tolist(),
            "home": self.home.tolist(),
            "gripper": self.gripper,
            "gripper_max_opening_m": GRIPPER_MAX_OPENING,
            "ee_z_min_m": self.ee_z_min,
            "ee_posture_gain": self.ee_posture_gain,
            "dim": self.dim,
        }

    @classmethod
    def from_json(cls, d: Mapping) -> ActionSpec:
        return cls(
            mode=d["mode"],
            joint_names=tuple(d["joint_names"]),
            joint_scale=float(d["joint_scale_rad"]),
            ee_scale=float(d["ee_scale_m"]),
            lower=np.asarray(d["lower"], dtype=np.float64),
            upper=np.asarray(d["upper"], dtype=np.float64),
            home=np.asarray(d["home"], dtype=np.float64),
            gripper=bool(d["gripper"]),
            ee_z_min=None if d.get("ee_z_min_m") is None else float(d["ee_z_min_m"]),
            ee_posture_gain=float(d.get("ee_posture_gain", 0.0)),
        )


# The tabletop's TCP floor: the table top is z = 0 in the base frame and the fingertips are
# about 5.3 cm below the TCP, so they stop about 1.5 cm above the table, low enough to push and
# grasp a 5 cm cube. A robot whose table sits elsewhere needs its own value in the action spec.
EE_Z_MIN = 0.065  # m
EE_POSTURE_GAIN = 0.1  # a tenth of the posture error per step: a 0.4 s time constant at 25 Hz


def make_action_spec(mode: str = JOINT_DELTA, gripper: bool = False) -> ActionSpec:
    if mode not in ACTION_MODES:
        raise ValueError(f"action mode {mode!r} is unknown: use one of {ACTION_MODES}")
    return ActionSpec(
        mode=mode,
        joint_names=PANDA_JOINT_NAMES,
        joint_scale=0.1,
        ee_scale=0.03,
        lower=PANDA_JOINT_LOWER.copy(),
        upper=PANDA_JOINT_UPPER.copy(),
        home=PANDA_HOME.copy(),
        gripper=gripper,
        ee_z_min=EE_Z_MIN if mode == EE_DELTA else None,
        ee_posture_gain=EE_POSTURE_GAIN if mode == EE_DELTA else 0.0,
    )


FIELD_NAMES: tuple[str, ...] = tuple(_FIELDS)  # every field a layout may name


def layout_from_fields(
    task: str, observation: Sequence[str], achieved_goal: str, action_dim: int
) -> ObsLayout:
    """A layout from field names: the ``observation`` fields in order (``prev_action`` among
    them, sized ``action_dim``) and the field that is the ``achieved_goal``; the desired goal is
    always ``goal``. A task spec (:class:`manip_rl.envs.spec.TaskSpec`) calls this with its own
    field names, so this module holds no table of tasks."""
    unknown = [n for n in (*observation, achieved_goal) if n not in _FIELDS]
    if unknown:
        raise ValueError(
            f"task {task!r}: observation field(s) {unknown} are unknown; policy_io builds "
            f"{', '.join(FIELD_NAMES)}"
        )
    if len(set(observation)) != len(observation):
        raise ValueError(f"task {task!r}: observation fields repeat: {list(observation)}")
    fields = tuple(
        dataclasses.replace(_FIELDS[n], size=int(action_dim)) if n == "prev_action" else _FIELDS[n]
        for n in observation
    )
    return ObsLayout(task, fields, _FIELDS[achieved_goal], _FIELDS["goal"])


def layout_from_json(task: str, flat_fields: Sequence[Mapping]) -> ObsLayout:
    """The layout a policy file's metadata describes (its ``observation.fields`` list, as
    :meth:`ObsLayout.flat_fields` wrote it). The robot side builds its layout with this, so a
    file carries its own observation contract. Raises ValueError naming the field that is
    wrong (unknown name, wrong size or offset, goals missing)."""
    fields = [dict(f) for f in flat_fields]
    by_key: dict[str, list[dict]] = {"achieved_goal": [], "desired_goal": [], "observation": []}
    start = 0
    for i, f in enumerate(fields):
        key, name = f.get("key"), f.get("name")
        if key not in by_key or name not in _FIELDS:
            raise ValueError(
                f"observation.fields[{i}] = {key}.{name}: unknown; keys are {list(by_key)}, "
                f"names {', '.join(FIELD_NAMES)}"
            )
        if int(f.get("start", -1)) != start:
            raise ValueError(
                f"observation.fields[{i}] ({key}.{name}) starts at {f.get('start')}, expected "
                f"{start}: the fields must tile the flat vector in order"
            )
        start += int(f.get("size", 0))
        by_key[key].append(f)
    goals = by_key["achieved_goal"], by_key["desired_goal"]
    if any(len(g) != 1 for g in goals) or by_key["desired_goal"][0]["name"] != "goal":
        raise ValueError(
            "observation.fields: needs exactly one achieved_goal field and one desired_goal "
            "field named 'goal'"
        )
    names = [f["name"] for f in by_key["observation"]]
    act_dim = next((int(f["size"]) for f in by_key["observation"] if f["name"] == "prev_action"), 0)
    layout = layout_from_fields(task, names, by_key["achieved_goal"][0]["name"], act_dim)
    for f, want in zip(fields, layout.flat_fields(), strict=True):
        if int(f["size"]) != want["size"]:
            raise ValueError(
                f"observation.fields: {f['key']}.{f['name']} has size {f['size']}; policy_io's "
                f"{f['name']} has {want['size']}"
            )
    return layout


# A sensor reading as one flat vector (what the simulator fills each step and what the robot-side
# Sensors packs into): fields and their slices. Tasks without an object leave its slots at zero.
SENSOR_FIELDS: tuple[tuple[str, int], ...] = (
    ("joint_pos", 7),
    ("joint_vel", 7),
    ("ee_pos", 3),
    ("gripper_opening", 1),
    ("object_pos", 3),
    ("object_quat", 4),
)
SENSOR_SLICES: dict[str, slice] = {}
_start = 0
for _name, _size in SENSOR_FIELDS:
    SENSOR_SLICES[_name] = slice(_start, _start + _size)
    _start += _size
SENSOR_DIM = _start


@dataclasses.dataclass
class Sensors:
    """What a robot (or the simulator) measures at one instant, robot convention."""

    joint_pos: np.ndarray
    joint_vel: np.ndarray
    ee_pos: np.ndarray
    gripper_opening: float = 0.0
    object_pos: np.ndarray | None = None
    object_quat: np.ndarray | None = None

    def to_vector(self) -> np.ndarray:
        v = np.zeros(SENSOR_DIM)
        v[SENSOR_SLICES["joint_pos"]] = self.joint_pos
        v[SENSOR_SLICES["joint_vel"]] = self.joint_vel
        v[SENSOR_SLICES["ee_pos"]] = self.ee_pos
        v[SENSOR_SLICES["gripper_opening"]] = self.gripper_opening
        if self.object_pos is not None:
            v[SENSOR_SLICES["object_pos"]] = self.object_pos
        if self.object_quat is not None:
            v[SENSOR_SLICES["object_quat"]] = self.object_quat
        return v


class ObservationBuilder:
    """Builds a layout's observation from a sensor vector, goal and previous action.

    The layout is compiled once into one gather index over ``[sensors | object - ee | goal |
    previous action]``, so a step costs one concatenate and one take (this runs in every env
    step and every robot control cycle).
    """

    def __init__(self, layout: ObsLayout) -> None:
        self.layout = layout
        rel, goal = SENSOR_DIM, SENSOR_DIM + 3
        prev = SENSOR_DIM + 6
        source = {name: range(sl.start, sl.stop) for name, sl in SENSOR_SLICES.items()}
        source["object_rel_pos"] = range(rel, rel + 3)
        source["goal"] = range(goal, goal + 3)
        index = list(source[layout.achieved_goal.name]) + list(source["goal"])
        for f in layout.observation:
            index += (
                list(range(prev, prev + f.size))
                if f.name == "prev_action"
                else list(source[f.name])
            )
        self._index = np.array(index)
        self._needs_object = any(f.name.startswith("object") for f in layout.observation)
        g = layout.goal_dim
        self._split = (g, 2 * g)
        self._obj, self._ee = SENSOR_SLICES["object_pos"], SENSOR_SLICES["ee_pos"]

    def __call__(
        self, sensors: np.ndarray, goal: np.ndarray, prev_action: np.ndarray
    ) -> dict[str, np.ndarray]:
        # float32 once, in the concatenate (each entry is rounded from float64 as before).
        src = np.concatenate(
            (sensors, sensors[self._obj] - sensors[self._ee], goal, prev_action), dtype=np.float32
        )
        flat = src.take(self._index)
        a, b = self._split
        return {"observation": flat[b:], "achieved_goal": flat[:a], "desired_goal": flat[a:b]}


@functools.lru_cache(maxsize=32)
def _builder(layout: ObsLayout) -> ObservationBuilder:
    return ObservationBuilder(layout)


def build_observation(
    layout: ObsLayout, sensors: Sensors, goal: np.ndarray, prev_action: np.ndarray
) -> dict[str, np.ndarray]:
    """The GoalEnv observation dict from sensor readings; the one builder used everywhere."""
    builder = _builder(layout)
    if builder._needs_object or layout.achieved_goal.name == "object_pos":
        _required(sensors.object_pos, "object_pos")
        _required(sensors.object_quat, "object_quat")
    prev = np.asarray(prev_action, dtype=np.float64)
    if prev.shape != (layout.observation[-1].size,):
        raise ValueError(
            f"previous action has shape {prev.shape}; the layout needs ({layout.observation[-1].size},)"
        )
    return builder(sensors.to_vector(), np.asarray(goal, dtype=np.float64), prev)


def _required(value: np.ndarray | None, name: str) -> np.ndarray:
    if value is None:
        raise ValueError(f"this task's observation needs {name}, but the sensors gave none")
    return np.asarray(value)


def flatten_observation(obs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The flat policy input: ``achieved_goal | desired_goal | observation`` (SB3's order)."""
    return np.concatenate(
        [obs["achieved_goal"], obs["desired_goal"], obs["observation"]], axis=-1
    ).astype(np.float32)


def action_to_joint_targets(
    spec: ActionSpec,
    action: np.ndarray,
    joint_pos: np.ndarray,
    ee_jacobian: np.ndarray | None = None,
    ee_pos: np.ndarray | None = None,
) -> tuple[np.ndarray, float | None]:
    """Map an action in [-1, 1] to (arm joint targets, gripper opening or None).

    ``joint_delta``: target = measured position + ``joint_scale`` * action, clipped to the limits.
    ``ee_delta``: the end-effector displacement ``ee_scale`` * action, its downward part cut so
    the TCP (at ``ee_pos``, base frame) stays at or above ``spec.ee_z_min``, is turned into
    joint displacements by damped least squares on the 3x7 position Jacobian ``ee_jacobian``
    (robot joints), plus a pull of the joints towards ``spec.home`` in the Jacobian's null
    space (``spec.ee_posture_gain``), which keeps the joints off their limits. Non-finite actions are treated as zero (hold), never passed on.
    """
    a = np.asarray(action, dtype=np.float64)
    if a.shape != (spec.dim,):
        raise ValueError(
            f"action has shape {a.shape}, the policy's action spec needs ({spec.dim},)"
        )
    return sanitized_action_to_joint_targets(
        spec, sanitize_action(a), np.asarray(joint_pos, dtype=np.float64), ee_jacobian, ee_pos
    )


def sanitized_action_to_joint_targets(
    spec: ActionSpec,
    action: np.ndarray,
    joint_pos: np.ndarray,
    ee_jacobian: np.ndarray | None = None,
    ee_pos: np.ndarray | None = None,
) -> tuple[np.ndarray, float | None]:
    """:func:`action_to_joint_targets` for an action already through :func:`sanitize_action`
    (the env's hot path, which sanitizes once for both the command and ``prev_action``)."""
    if spec.mode == JOINT_DELTA:
        dq = action[:7] * spec.joint_scale_array
    else:
        if ee_jacobian is None:
            raise ValueError("ee_delta actions need the end-effector Jacobian")
        dx = action[:3] * spec.ee_scale_array
        if spec.ee_z_min is not None:
            if ee_pos is None:
                raise ValueError(
                    f"this action spec keeps the TCP at or above z = {spec.ee_z_min} m: "
                    "ee_delta actions need the TCP position (ee_pos)"
                )
            floor = spec.ee_z_min - float(ee_pos[2])
            if dx[2] < floor:
                dx[2] = floor
        if spec.ee_posture_gain > 0:
            # Null-space posture: v pulls the joints towards home; J+ (dx - J v) + v moves the
            # TCP by dx (up to the damping) and spends the remaining freedom on the pull.
            v = spec.ee_posture_gain * (spec.home - joint_pos)
            dq = damped_least_squares(ee_jacobian, dx - ee_jacobian @ v) + v
        else:
            dq = damped_least_squares(ee_jacobian, dx)
    targets = np.minimum(np.maximum(joint_pos + dq, spec.lower), spec.upper)
    gripper = None
    if spec.gripper:
        gripper = (float(action[-1]) + 1.0) * 0.5 * GRIPPER_MAX_OPENING
    return targets, gripper


_MINUS_ONE, _ONE = np.array(-1.0), np.array(1.0)


def sanitize_action(action: np.ndarray) -> np.ndarray:
    """Non-finite entries become 0 (hold), the rest is clipped to [-1, 1]; float64 out."""
    # One reduction tells whether any entry is NaN or infinite (a sum of squares of finite
    # float64 values that overflows also lands here, and is then handled exactly).
    flat = action if action.ndim == 1 else action.reshape(-1)
    if not math.isfinite(flat.dot(flat)):
        action = np.where(np.isfinite(action), action, 0.0)
    # 0-d array bounds: a Python float operand costs numpy a conversion in every call.
    return np.minimum(np.maximum(action, _MINUS_ONE), _ONE)


@functools.lru_cache(maxsize=8)
def _damping_matrix(n: int, damping: float) -> np.ndarray:
    m = (damping**2) * np.eye(n)
    m.flags.writeable = False
    return m


def damped_least_squares(jac: np.ndarray, dx: np.ndarray, damping: float = 0.05) -> np.ndarray:
    """Joint displacement dq minimising |J dq - dx|^2 + damping^2 |dq|^2."""
    jjt = jac @ jac.T + _damping_matrix(jac.shape[0], damping)
    return jac.T @ np.linalg.solve(jjt, dx)
