"""Guarded perception inputs of policy_bridge: the goal and the object pose. ROS-free, unit-tested.

A pose from perception is a measurement with a time and a frame, so it is judged as a joint
state is (:mod:`manip_rl.ros_bridge.plausibility`) before the policy sees it. :class:`InputGuard`
refuses, in this order, a message

1. with a NaN or infinite position or orientation: ``hold_nonfinite_input``;
2. whose quaternion has (nearly) zero norm: ``hold_bad_quaternion`` (otherwise it is normalized,
   and its sign chosen to continue the last accepted one: ``q`` and ``-q`` are one rotation, and a
   policy trained on a continuous orientation must not see it flip);
3. stamped more than ``future_tolerance`` s ahead of the node clock: ``hold_future_stamp``;
4. older than ``timeout`` s on arrival: ``hold_stale_perception``;
5. in a frame other than the base frame or the configured camera frame (whose fixed base<-camera
   transform is applied): ``hold_wrong_frame``;
6. while commanding, farther from the last accepted reading than
   ``max_jump + max_speed x (time between their stamps)``: ``hold_perception_jump`` (the bound
   grows with time, so a real move the guard missed is accepted once it could have happened).

The newest message's refusal is kept (:attr:`InputGuard.problem`) until an acceptable one
arrives: the bridge holds meanwhile. :meth:`InputGuard.current` then ages the last accepted
reading by its stamp on the same clock: older than ``timeout`` holds, except that a grasped
object's pose (the gripper hides the cube from the camera) is used up to ``occluded_hold`` s.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from manip_rl.ros_bridge.safety import HOLD_NONFINITE, OK

HOLD_STALE_PERCEPTION = "hold_stale_perception"
HOLD_FUTURE_STAMP = "hold_future_stamp"
HOLD_WRONG_FRAME = "hold_wrong_frame"
HOLD_PERCEPTION_JUMP = "hold_perception_jump"
HOLD_BAD_QUATERNION = "hold_bad_quaternion"
MIN_QUAT_NORM = 1e-6  # a quaternion this short carries no rotation: it is a zeroed message


def stamp_seconds(stamp) -> float:
    """A ``builtin_interfaces/Time`` (anything with ``sec`` and ``nanosec``) in seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of two ``w, x, y, z`` quaternions."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix of a unit ``w, x, y, z`` quaternion."""
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


@dataclasses.dataclass(frozen=True)
class FrameTransform:
    """A fixed transform base<-camera: ``translation`` (m, the camera origin in the base frame)
    and ``rotation`` (``x, y, z, w`` as tf2's static_transform_publisher takes it)."""

    translation: Sequence[float] = (0.0, 0.0, 0.0)
    rotation: Sequence[float] = (0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        t = np.asarray(self.translation, dtype=np.float64)
        r = np.asarray(self.rotation, dtype=np.float64)
        if t.shape != (3,) or not np.isfinite(t).all():
            raise ValueError(
                f"parameter camera_translation must be 3 finite numbers (m), got {list(t)}"
            )
        norm = float(np.linalg.norm(r)) if r.shape == (4,) else 0.0
        if r.shape != (4,) or not np.isfinite(r).all() or abs(norm - 1.0) > 1e-3:
            raise ValueError(
                "parameter camera_rotation must be a unit quaternion x, y, z, w (as tf2 "
                f"writes it), got {list(r)}"
            )
        wxyz = np.array([r[3], r[0], r[1], r[2]]) / norm
        object.__setattr__(self, "translation", t)
        object.__setattr__(self, "rotation", r)
        object.__setattr__(self, "_wxyz", wxyz)
        object.__setattr__(self, "_matrix", quat_to_matrix(wxyz))

    def point(self, p: np.ndarray) -> np.ndarray:
        """A camera-frame point in the base frame."""
        return self._matrix @ p + self.translation

    def quat(self, q: np.ndarray) -> np.ndarray:
        """A camera-frame orientation (``w, x, y, z``) in the base frame."""
        return quat_multiply(self._wxyz, q)


@dataclasses.dataclass(frozen=True)
class GuardConfig:
    """What one perception input may be. ``timeout``: oldest stamp (s) a reading may be used at
    (0: never expires); ``future_tolerance``: how far (s) a stamp may lie ahead of the node
    clock (clock skew); ``max_jump`` (m) and ``max_speed`` (m/s): the jump bound;
    ``occluded_hold``: how old (s) a grasped object's pose may be used (0: not at all);
    ``base_frame``, ``camera_frame`` ('' for none) and its ``camera`` transform."""

    base_frame: str
    timeout: float
    future_tolerance: float = 0.02
    max_jump: float = 0.05
    max_speed: float = 1.0
    occluded_hold: float = 0.0
    camera_frame: str = ""
    camera: FrameTransform = dataclasses.field(default_factory=FrameTransform)

    def __post_init__(self) -> None:
        if not self.base_frame:
            raise ValueError("parameter base_frame is empty: name the robot's base frame")
        for name in ("timeout", "future_tolerance", "max_jump", "max_speed", "occluded_hold"):
            value = getattr(self, name)
            if not (isinstance(value, float | int) and math.isfinite(value) and value >= 0):
                raise ValueError(f"perception {name} must be a number >= 0, got {value!r}")
        if self.camera_frame == self.base_frame:
            raise ValueError(
                f"parameter camera_frame equals base_frame ({self.base_frame!r}); leave "
                "camera_frame empty when perception publishes in the base frame"
            )


class InputGuard:
    """Judges one perception stream (``name``: ``goal`` or ``object pose``, for messages); see
    the module docstring. Times are seconds on one clock (the node's)."""

    def __init__(self, name: str, config: GuardConfig) -> None:
        self.name = name
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Forget every reading and verdict."""
        self.position: np.ndarray | None = None
        self.quat: np.ndarray | None = None
        self.stamp = -math.inf
        self.problem = ""  # status of the newest message when it was refused, else ""
        self.detail = ""

    def _refuse(self, status: str, detail: str) -> str:
        self.problem, self.detail = status, f"{self.name} refused: {detail}"
        return status

    def offer(
        self,
        stamp: float,
        frame: str,
        position: Sequence[float],
        quat: Sequence[float] | None,
        now: float,
        check_jump: bool = True,
    ) -> str:
        """Judge one message (``quat`` ``w, x, y, z`` or None for a point); ``OK`` or the
        refusal's status (:attr:`detail` says why). ``check_jump``: whether the jump bound applies
        (the bridge applies it while commanding; a disabled bridge takes each new reading)."""
        cfg = self.config
        p = np.asarray(position, dtype=np.float64)
        q = None if quat is None else np.asarray(quat, dtype=np.float64)
        if not np.isfinite(p).all() or (q is not None and not np.isfinite(q).all()):
            return self._refuse(HOLD_NONFINITE, "a NaN or infinite value")
        if q is not None:
            norm = float(np.linalg.norm(q))
            if norm < MIN_QUAT_NORM:
                return self._refuse(
                    HOLD_BAD_QUATERNION, f"its quaternion has norm {norm:.3g}: no rotation"
                )
            q = q / norm
        if not math.isfinite(stamp):
            return self._refuse(HOLD_STALE_PERCEPTION, f"stamp {stamp!r}")
        ahead = stamp - now
        if ahead > cfg.future_tolerance:
            return self._refuse(
                HOLD_FUTURE_STAMP,
                f"stamped {ahead:.3f} s in the future (more than stamp_future_tolerance "
                f"{cfg.future_tolerance:g} s): the publisher's clock is not the bridge's",
            )
        if cfg.timeout > 0 and now - stamp > cfg.timeout:
            return self._refuse(
                HOLD_STALE_PERCEPTION,
                f"{now - stamp:.3f} s old on arrival (stamp {stamp:.3f}; timeout "
                f"{cfg.timeout:g} s)" + (" -- was it stamped?" if stamp == 0 else ""),
            )
        if frame == cfg.base_frame:
            pass
        elif cfg.camera_frame and frame == cfg.camera_frame:
            p = cfg.camera.point(p)
            if q is not None:
                q = cfg.camera.quat(q)
        else:
            known = cfg.base_frame + (f" or {cfg.camera_frame}" if cfg.camera_frame else "")
            return self._refuse(
                HOLD_WRONG_FRAME,
                f"frame_id {frame!r} is not {known}: publish in the base frame, or set "
                "camera_frame, camera_translation and camera_rotation",
            )
        if check_jump and self.position is not None:
            elapsed = max(0.0, stamp - self.stamp)
            allowed = cfg.max_jump + cfg.max_speed * elapsed
            moved = float(np.linalg.norm(p - self.position))
            if moved > allowed:
                return self._refuse(
                    HOLD_PERCEPTION_JUMP,
                    f"moved {moved:.3f} m in {elapsed:.3f} s since the last accepted one; at "
                    f"most {allowed:.3f} m (perception_max_jump {cfg.max_jump:g} m + "
                    f"perception_max_speed {cfg.max_speed:g} m/s x elapsed)",
                )
        if q is not None:
            reference = self.quat if self.quat is not None else np.array([1.0, 0.0, 0.0, 0.0])
            if float(q @ reference) < 0:
                q = -q
        self.position, self.quat, self.stamp = p, q, stamp
        self.problem = self.detail = ""
        return OK

    def current(self, now: float, grasped: bool = False) -> tuple[str, bool]:
        """``(status, occluded)`` of the last accepted reading at ``now``: ``OK`` to use it,
        '' when none arrived yet (wait), or the hold status (:attr:`detail` says why).
        ``occluded``: it is older than the timeout but used, the object being grasped."""
        if self.problem:
            return self.problem, False
        if self.position is None:
            return "", False
        cfg = self.config
        age = now - self.stamp
        if cfg.timeout <= 0 or age <= cfg.timeout:
            return OK, False
        if grasped and age <= cfg.occluded_hold:
            return OK, True
        self.detail = (
            f"{self.name} is {age:.3f} s old (timeout {cfg.timeout:g} s"
            + (f", {cfg.occluded_hold:g} s while grasped" if cfg.occluded_hold else "")
            + ")"
        )
        return HOLD_STALE_PERCEPTION, False
