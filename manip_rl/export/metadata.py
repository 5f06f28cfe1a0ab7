"""The checks a policy file's metadata (``manip_rl.json``) passes before the file may act.

The metadata is plain JSON beside the weights: the weights hash does not cover it, so an edited
file (limits of +-10 rad, seven joints of one name, a control period of a million seconds)
would otherwise load and reach a robot. Every safety-relevant field is checked here, and each
refusal names the field (``action.lower``, ``control_period_s`` ...) and says what is allowed.

Joint limits: a file's limits must lie within the robot description's datasheet limits
(``manip_rl.robots``) widened by :data:`LIMIT_TOLERANCE_RAD`. The tolerance exists for files
exported before the Panda's joint-6 lower limit became the datasheet's -0.0175 rad: they carry
the simulation model's -0.0865 (the shipped pretrained files among them). Such a file loads, and
:func:`narrowed_limits` cuts its limits to the datasheet's at use time, so no joint target past
the datasheet is ever commanded.

Needs numpy and the robot descriptions only (onnx for :func:`check_onnx_matches_metadata`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from manip_rl import policy_io
from manip_rl.robots import get_robot
from manip_rl.robots.description import RobotDescription

# How far (rad) a file's joint limit may lie outside the datasheet's (see the module docstring:
# files from before the datasheet joint-6 limit carry -0.0865, 0.069 rad below -0.0175).
LIMIT_TOLERANCE_RAD: Final = 0.1
# A control period a manip_rl policy can have been trained at: 1 kHz to 5 Hz (the envs use 25 Hz).
CONTROL_PERIOD_RANGE_S: Final = (0.001, 0.2)
# A full action's step: at most 0.5 rad per joint (joint_delta) and 0.1 m of TCP travel
# (ee_delta) per control step; the envs use 0.1 rad and 0.03 m.
MAX_JOINT_SCALE_RAD: Final = 0.5
MAX_EE_SCALE_M: Final = 0.1
# The lowest TCP height (m, base frame) an ee_delta file may set, and the highest.
EE_Z_MIN_RANGE_M: Final = (-0.5, 1.5)
_REQUIRED_KEYS: Final = (
    "schema_version",
    "task",
    "env_id",
    "observation",
    "action",
    "control_period_s",
    "normalization",
    "provenance",
    "weights_sha256",
)


class PolicyFileError(ValueError):
    """A policy file that cannot be used: missing, not TorchScript/ONNX, without (valid) metadata,
    of an unknown schema version, whose weights do not match their recorded hash, or whose
    metadata holds a value no robot should act on. The message names the file and the field."""


def _fail(path: str, field: str, problem: str) -> PolicyFileError:
    return PolicyFileError(
        f"{path!r}: metadata {field}: {problem}; the file was edited or is damaged: export the "
        f"policy again (`manip-rl export RUN`)"
    )


def _number(path: str, field: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _fail(path, field, f"expected a number, got {v!r}")
    if not math.isfinite(v):
        raise _fail(path, field, f"must be finite, got {v!r}")
    return float(v)


def _in_range(path: str, field: str, v: Any, low: float, high: float, what: str) -> float:
    x = _number(path, field, v)
    if not low <= x <= high:
        raise _fail(path, field, f"{x!r} is outside {what} [{low:g}, {high:g}]")
    return x


def _vector(path: str, field: str, v: Any, n: int, what: str) -> np.ndarray:
    if not isinstance(v, Sequence) or isinstance(v, str):
        raise _fail(path, field, f"expected a list of {n} numbers ({what}), got {v!r}")
    if len(v) != n:
        raise _fail(path, field, f"has {len(v)} values, but {what} needs {n}")
    return np.array([_number(path, f"{field}[{i}]", x) for i, x in enumerate(v)])


def _names(path: str, field: str, v: Any, n: int) -> tuple[str, ...]:
    if not isinstance(v, Sequence) or isinstance(v, str) or len(v) != n:
        raise _fail(path, field, f"expected {n} joint names, got {v!r}")
    if not all(isinstance(x, str) and x for x in v):
        raise _fail(path, field, f"every joint name must be a non-empty string, got {v!r}")
    repeated = sorted({x for x in v if list(v).count(x) > 1})
    if repeated:
        raise _fail(path, field, f"joint names repeat ({', '.join(repeated)}): each must be unique")
    return tuple(v)


def robot_of(md: Mapping, path: str) -> RobotDescription:
    """The robot description a file's limits are checked against (``robot``, default panda)."""
    name = md.get("robot", "panda")
    try:
        return get_robot(name)
    except (ValueError, TypeError) as e:
        raise _fail(path, "robot", str(e)) from None


def validate_metadata(md: Any, path: str, fmt: str = "torchscript") -> dict:
    """Check a parsed ``manip_rl.json``; returns it, or raises :class:`PolicyFileError` naming
    the first field that is missing, malformed or outside what a robot may act on."""
    if not isinstance(md, dict):
        raise PolicyFileError(f"{path!r}: its manip_rl.json metadata is not a JSON object")
    missing = [k for k in _REQUIRED_KEYS if k not in md]
    if missing:
        raise PolicyFileError(f"{path!r}: metadata lacks {', '.join(missing)}; export it again")
    task = md["task"]
    if not isinstance(task, str) or not task:
        raise _fail(path, "task", f"expected the task's name, got {task!r}")
    if not isinstance(md["env_id"], str) or not md["env_id"]:
        raise _fail(path, "env_id", f"expected a registered env id, got {md['env_id']!r}")
    _in_range(path, "control_period_s", md["control_period_s"], *CONTROL_PERIOD_RANGE_S,
              "the plausible control periods (s)")  # fmt: skip
    kwargs = md.get("env_kwargs", {})
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise _fail(path, "env_kwargs", f"expected a mapping of gym.make keywords, got {kwargs!r}")
    # The action mode is the file's action spec; randomization and rendering are make_env's
    # arguments: env_kwargs naming them would override those silently.
    own = sorted(set(kwargs) & {"action_mode", "randomization", "render_mode"})
    if own:
        raise _fail(
            path, f"env_kwargs.{own[0]}", "set by the file's action spec or make_env's arguments"
        )
    steps = kwargs.get("max_episode_steps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise _fail(path, "env_kwargs.max_episode_steps", f"expected steps >= 1, got {steps!r}")
    act = _validate_action(md["action"], task, robot_of(md, path), path)
    obs = md["observation"]
    if not isinstance(obs, Mapping) or isinstance(obs.get("dim"), bool):
        raise _fail(path, "observation", "expected {dim: N, fields: [...]}")
    try:  # the file's own observation contract (no task table: a file describes itself)
        layout = policy_io.ObsLayout.from_json(task, obs.get("fields"))
    except (KeyError, TypeError, ValueError) as e:
        raise _fail(path, "observation.fields", f"malformed ({e})") from None
    prev = [f.size for f in layout.observation if f.name == "prev_action"]
    if prev and prev[0] != act["dim"]:
        raise _fail(path, "observation.fields", f"prev_action has {prev[0]} values, but the "
                    f"action has {act['dim']}")  # fmt: skip
    observes_gripper = any(f.name == "gripper_opening" for f in layout.observation)
    if act["gripper"] != observes_gripper:
        raise _fail(path, "action.gripper", f"{act['gripper']}, but the observation "
                    f"{'has' if observes_gripper else 'has no'} gripper_opening")  # fmt: skip
    if obs.get("dim") != layout.flat_dim:
        raise _fail(path, "observation.dim", f"{obs.get('dim')!r} does not match the {task} "
                    f"layout of this manip_rl ({layout.flat_dim} values)")  # fmt: skip
    memory = validate_memory(md, layout.flat_dim, path)
    k = int(memory["history"]) if memory is not None and memory["kind"] == "history" else 1
    _validate_normalization(md["normalization"], k * layout.flat_dim, path)
    sha = md["weights_sha256"]
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise _fail(path, "weights_sha256", f"expected 64 hex digits, got {str(sha)[:70]!r}")
    return md


# What each kind of memory carries as its state (names in the file's input order).
MEMORY_KINDS: Final = {"lstm": ("h", "c"), "history": ("history",)}
# The largest state one step may carry, in values (a 4-layer LSTM of 1024 units is 4096 each).
MAX_STATE_VALUES: Final = 1 << 16


def validate_memory(md: Mapping, obs_dim: int, path: str) -> dict | None:
    """The ``memory`` entry of a stateful file (schema 2), checked: its kind, and each state's
    name, shape, dtype and reset rule agree with what that kind carries. None for a memoryless
    file. Refusals name the field (``memory.state[1].shape`` ...)."""
    version = md.get("schema_version")
    if "memory" not in md or md["memory"] is None:
        if version == 2:
            raise _fail(path, "memory", "missing; a schema 2 file declares its state there (a "
                        "memoryless file is schema 1)")  # fmt: skip
        return None
    if version == 1:
        raise _fail(path, "memory", "a schema 1 file has no memory; stateful files are schema 2")
    mem = md["memory"]
    if not isinstance(mem, Mapping):
        raise _fail(path, "memory", f"expected a mapping {{kind, state: [...]}}, got {mem!r}")
    kind = mem.get("kind")
    if kind not in MEMORY_KINDS:
        raise _fail(path, "memory.kind", f"{kind!r} is unknown; known: {', '.join(MEMORY_KINDS)}")
    state = mem.get("state")
    names = MEMORY_KINDS[kind]
    if not isinstance(state, Sequence) or isinstance(state, str) or len(state) != len(names):
        raise _fail(path, "memory.state", f"a {kind} memory carries {len(names)} states "
                    f"({', '.join(names)}), got {state!r}")  # fmt: skip
    if kind == "history":
        k = mem.get("history")
        if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= 1000:
            raise _fail(path, "memory.history", f"expected an integer k in [2, 1000], got {k!r}")
        shapes = [[(k - 1) * obs_dim]]
    else:
        spec = mem.get("lstm")
        if not isinstance(spec, Mapping):
            raise _fail(path, "memory.lstm", f"expected {{hidden_size, num_layers}}, got {spec!r}")
        for key in ("hidden_size", "num_layers"):
            v = spec.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise _fail(path, f"memory.lstm.{key}", f"expected a positive integer, got {v!r}")
        shapes = [[spec["num_layers"], spec["hidden_size"]]] * 2
    for i, (entry, name, shape) in enumerate(zip(state, names, shapes, strict=True)):
        field = f"memory.state[{i}]"
        if not isinstance(entry, Mapping):
            raise _fail(path, field, f"expected {{name, shape, dtype, reset}}, got {entry!r}")
        if entry.get("name") != name:
            raise _fail(path, f"{field}.name", f"{entry.get('name')!r}; state {i} of a {kind} "
                        f"memory is {name!r}")  # fmt: skip
        if not isinstance(entry.get("shape"), list) or entry["shape"] != shape:
            raise _fail(path, f"{field}.shape", f"{entry.get('shape')!r}; a {kind} memory of "
                        f"this file's sizes has {shape}")  # fmt: skip
        if int(np.prod(shape)) > MAX_STATE_VALUES:
            raise _fail(
                path, f"{field}.shape", f"{shape} holds more than {MAX_STATE_VALUES} values"
            )
        if entry.get("dtype") != "float32":
            raise _fail(path, f"{field}.dtype", f"{entry.get('dtype')!r}; states are float32")
        if entry.get("reset") != "zeros":
            raise _fail(path, f"{field}.reset", f"{entry.get('reset')!r}; a state resets to "
                        "'zeros' at an episode's start")  # fmt: skip
    return dict(mem)


def _validate_action(a: Any, task: str, robot: RobotDescription, path: str) -> dict:
    if not isinstance(a, Mapping):
        raise _fail(path, "action", f"expected a mapping, got {a!r}")
    for key in ("mode", "joint_names", "joint_scale_rad", "ee_scale_m", "lower", "upper",
                "home", "gripper", "dim"):  # fmt: skip
        if key not in a:
            raise _fail(path, f"action.{key}", "missing")
    mode = a["mode"]
    if mode not in policy_io.ACTION_MODES:
        raise _fail(path, "action.mode", f"{mode!r} is unknown; known: "
                    f"{', '.join(policy_io.ACTION_MODES)}")  # fmt: skip
    gripper = a["gripper"]
    if not isinstance(gripper, bool):
        raise _fail(path, "action.gripper", f"expected true or false, got {gripper!r}")
    dim = (7 if mode == policy_io.JOINT_DELTA else 3) + int(gripper)
    if isinstance(a["dim"], bool) or a["dim"] != dim:
        raise _fail(path, "action.dim", f"{a['dim']!r}, but a {mode} action"
                    f"{' with gripper' if gripper else ''} has {dim} values")  # fmt: skip
    n = robot.dof
    _names(path, "action.joint_names", a["joint_names"], n)
    what = f"the {robot.name}'s {n} joints"
    lower = _vector(path, "action.lower", a["lower"], n, what)
    upper = _vector(path, "action.upper", a["upper"], n, what)
    home = _vector(path, "action.home", a["home"], n, what)
    for i in range(n):
        if not lower[i] < upper[i]:
            raise _fail(path, f"action.lower[{i}]", f"{lower[i]:g} is not below action.upper[{i}]"
                        f" = {upper[i]:g}")  # fmt: skip
    tol = LIMIT_TOLERANCE_RAD
    for field, values in (("lower", lower), ("upper", upper)):
        for i, x in enumerate(values):
            lo, hi = robot.lower[i] - tol, robot.upper[i] + tol
            if not lo <= x <= hi:
                raise _fail(path, f"action.{field}[{i}]", f"{x:g} rad is outside joint {i + 1}'s "
                            f"range [{robot.lower[i]:g}, {robot.upper[i]:g}] from the "
                            f"{robot.source}, widened by {tol:g} rad")  # fmt: skip
    for i, x in enumerate(home):
        if not lower[i] <= x <= upper[i]:
            raise _fail(path, f"action.home[{i}]", f"{x:g} rad is outside the file's own limits "
                        f"[{lower[i]:g}, {upper[i]:g}]")  # fmt: skip
    _in_range(path, "action.joint_scale_rad", a["joint_scale_rad"], 1e-6, MAX_JOINT_SCALE_RAD,
              "the plausible per-step joint motions (rad)")  # fmt: skip
    _in_range(path, "action.ee_scale_m", a["ee_scale_m"], 1e-6, MAX_EE_SCALE_M,
              "the plausible per-step TCP motions (m)")  # fmt: skip
    if a.get("ee_z_min_m") is not None:
        _in_range(path, "action.ee_z_min_m", a["ee_z_min_m"], *EE_Z_MIN_RANGE_M,
                  "the plausible TCP floors (m, base frame)")  # fmt: skip
    _in_range(path, "action.ee_posture_gain", a.get("ee_posture_gain", 0.0), 0.0, 1.0,
              "the posture gains per step")  # fmt: skip
    fingers = a.get("gripper_joint_names", [])
    if gripper:
        names = _names(path, "action.gripper_joint_names", fingers, 2)
        if set(names) & set(a["joint_names"]):
            raise _fail(path, "action.gripper_joint_names", "a finger shares an arm joint's name")
        _in_range(path, "action.gripper_max_opening_m", a.get("gripper_max_opening_m"),
                  1e-3, robot.gripper_max_opening + 1e-6,
                  f"the {robot.name} hand's opening (m)")  # fmt: skip
    elif fingers:
        raise _fail(path, "action.gripper_joint_names", f"{fingers!r}, but action.gripper is false")
    return dict(a)


def _validate_normalization(norm: Any, obs_dim: int, path: str) -> None:
    if not isinstance(norm, Mapping) or not isinstance(norm.get("enabled"), bool):
        raise _fail(path, "normalization.enabled", "expected {enabled: true|false, ...}")
    if not norm["enabled"]:
        return
    what = f"the {obs_dim}-value observation"
    _vector(path, "normalization.mean", norm.get("mean"), obs_dim, what)
    var = _vector(path, "normalization.var", norm.get("var"), obs_dim, what)
    if (var < 0).any():
        raise _fail(path, f"normalization.var[{int(np.argmax(var < 0))}]", "a variance is < 0")
    _in_range(path, "normalization.epsilon", norm.get("epsilon"), 1e-300, 1.0, "(0, 1]")
    _in_range(path, "normalization.clip_obs", norm.get("clip_obs"), 1e-6, 1e6,
              "the clip bounds VecNormalize takes")  # fmt: skip
    mask = norm.get("normalized", [True] * obs_dim)
    if (
        not isinstance(mask, Sequence)
        or len(mask) != obs_dim
        or not all(isinstance(x, bool) for x in mask)
    ):
        raise _fail(path, "normalization.normalized", f"expected {obs_dim} true/false values")


def narrowed_limits(spec: policy_io.ActionSpec, robot: RobotDescription) -> policy_io.ActionSpec:
    """``spec`` with its joint limits cut to the robot's datasheet limits (files from before the
    datasheet joint-6 limit carry a wider one; see the module docstring)."""
    import dataclasses

    lower = np.maximum(spec.lower, robot.lower)
    upper = np.minimum(spec.upper, robot.upper)
    return dataclasses.replace(spec, lower=lower, upper=upper)


def expected_normalizer(norm: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """(scale, shift) a module must apply for the metadata's normalization statistics."""
    var = np.asarray(norm["var"], dtype=np.float64)
    mean = np.asarray(norm["mean"], dtype=np.float64)
    mask = np.asarray(norm.get("normalized", [True] * len(var)), dtype=bool)
    scale = np.where(mask, 1.0 / np.sqrt(var + float(norm["epsilon"])), 1.0)
    shift = np.where(mask, -mean * scale, 0.0)
    return scale, shift


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    return got.shape == want.shape and np.allclose(got, want, rtol=1e-12, atol=1e-300)


def check_onnx_matches_metadata(model: Any, md: Mapping, path: str) -> None:
    """The normalization an ONNX graph applies is the one its metadata reports: its
    ``obs_scale`` / ``obs_shift`` initializers and the bounds of the clip that follows them (the
    ONNX twin of the TorchScript module check in :mod:`manip_rl.export.policy_file`)."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    norm = md["normalization"]
    has = "obs_scale" in inits and "obs_shift" in inits
    if has != bool(norm["enabled"]):
        raise PolicyFileError(
            f"{path!r}: metadata says normalization enabled={norm['enabled']}, the ONNX graph "
            f"{'normalizes' if has else 'does not normalize'}; export it again"
        )
    if not has:
        return
    scale, shift = expected_normalizer(norm)
    if not (_same(inits["obs_scale"], scale) and _same(inits["obs_shift"], shift)):
        raise PolicyFileError(
            f"{path!r}: the normalization statistics in the metadata (normalization.mean/var) "
            f"differ from the ones baked into the ONNX graph; export it again"
        )
    clip = float(norm["clip_obs"])
    bound = _first_clip_bound(model, inits)
    if bound is not None and not math.isclose(bound, clip, rel_tol=1e-12):
        raise PolicyFileError(
            f"{path!r}: metadata normalization.clip_obs = {clip:g}, the ONNX graph clips the "
            f"normalized observation at {bound:g}; export it again"
        )


def _first_clip_bound(model: Any, inits: Mapping[str, np.ndarray]) -> float | None:
    """The upper bound of the Clip applied to the normalized observation (the one fed by the
    node that adds ``obs_shift``), or None when there is no such scalar clip (per-entry bounds,
    for partly normalized observations, are checked through the statistics)."""
    from onnx import numpy_helper

    consts: dict[str, np.ndarray] = {}
    normalized: str | None = None
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = numpy_helper.to_array(attr.t)
        if "obs_shift" in node.input:
            normalized = node.output[0]
        if node.op_type == "Clip" and normalized is not None and node.input[0] == normalized:
            high = (
                consts.get(node.input[2], inits.get(node.input[2])) if len(node.input) > 2 else None
            )
            if high is None or np.size(high) != 1:
                return None
            return float(np.asarray(high).reshape(-1)[0])
    return None
