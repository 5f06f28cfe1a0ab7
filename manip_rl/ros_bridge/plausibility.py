"""Plausibility of joint readings, checked before any reading is used. ROS-free and unit-tested.

A joint state is a measurement of a physical arm, so it can be checked against what that arm can
be and do (its :class:`~manip_rl.robots.RobotDescription`). :class:`StateCheck` rejects, in
this order, a joint state that

1. names a joint twice (which of the values is the joint's?): ``hold_duplicate_joint_names``;
2. has a NaN or infinite position or velocity: ``hold_nonfinite_input``;
3. is stamped more than ``future_tolerance`` s ahead of the node clock (the publisher's clock is
   not the bridge's, so no age computed from it means anything): ``hold_future_stamp``;
4. puts a joint outside the robot's position limits by more than ``tolerance`` rad:
   ``hold_state_outside_limits``;
5. jumps faster than the arm can move: a joint moved more than
   ``speed_margin x velocity limit x elapsed + tolerance`` from the last *accepted* reading,
   elapsed counted between the two readings' header stamps: ``hold_state_jump``.

Stamps, not arrival times, are the readings' times (issue #16): the bridge ages the newest
accepted reading by its stamp on the node clock (``use_sim_time`` included).

The reference of the jump test is the last accepted reading, not the previous message, so a
glitch is rejected on its way out and on its way back, and a real motion that the bridge missed
(a gap in the stream, a simulator reset) is accepted once the arm could have made it. The
tolerance covers sensor noise and stamp jitter. Missing joints and
mismatched array sizes are contract errors (:class:`~manip_rl.ros_bridge.runner.JointStateError`,
raised to the caller), not readings.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from manip_rl.robots import RobotDescription
from manip_rl.ros_bridge.perception import HOLD_FUTURE_STAMP
from manip_rl.ros_bridge.runner import DuplicateJointNames, JointMap, JointReading
from manip_rl.ros_bridge.safety import (
    HOLD_DUPLICATE_NAMES,
    HOLD_NONFINITE,
    HOLD_OUTSIDE_LIMITS,
    HOLD_STATE_JUMP,
    OK,
)

DEFAULT_TOLERANCE = (
    0.05  # rad: well above joint-encoder noise (Franka: ~1e-4 rad), far below a jump
)
DEFAULT_SPEED_MARGIN = 1.5  # readings may move this many times the datasheet velocity limit
# s a stamp may lie ahead of the node clock: clock skew between two synchronized machines.
DEFAULT_FUTURE_TOLERANCE = 0.02


@dataclasses.dataclass(frozen=True)
class PlausibilityConfig:
    """What a reading may be: ``lower``/``upper`` position limits (rad) and ``velocity`` limits
    (rad/s) per joint in the policy's joint order, ``tolerance`` (rad) allowed beyond the limits
    and beyond the speed bound, ``speed_margin`` on the velocity limits, ``future_tolerance``
    (s) a stamp may lie ahead of the node clock."""

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    tolerance: float = DEFAULT_TOLERANCE
    speed_margin: float = DEFAULT_SPEED_MARGIN
    future_tolerance: float = DEFAULT_FUTURE_TOLERANCE

    def __post_init__(self) -> None:
        for name in ("lower", "upper", "velocity"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.ndim != 1 or not np.isfinite(value).all():
                raise ValueError(f"plausibility {name} must be finite numbers, got {value!r}")
            object.__setattr__(self, name, value)
        if not (self.lower.shape == self.upper.shape == self.velocity.shape):
            raise ValueError("plausibility lower, upper and velocity must have one value per joint")
        if (self.velocity <= 0).any():
            raise ValueError("plausibility velocity limits must be > 0 rad/s")
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ValueError(f"state_tolerance must be >= 0 rad, got {self.tolerance!r}")
        if not (math.isfinite(self.speed_margin) and self.speed_margin >= 1.0):
            raise ValueError(
                f"state_speed_margin must be >= 1 (a multiple of the robot's velocity limits), "
                f"got {self.speed_margin!r}"
            )
        if not (math.isfinite(self.future_tolerance) and self.future_tolerance >= 0):
            raise ValueError(
                f"stamp_future_tolerance must be >= 0 s, got {self.future_tolerance!r}"
            )

    @classmethod
    def from_robot(
        cls,
        robot: RobotDescription,
        tolerance: float = DEFAULT_TOLERANCE,
        speed_margin: float = DEFAULT_SPEED_MARGIN,
        future_tolerance: float = DEFAULT_FUTURE_TOLERANCE,
    ) -> PlausibilityConfig:
        """The robot description's position and velocity limits (joints in its order)."""
        return cls(
            robot.lower,
            robot.upper,
            robot.velocity,
            float(tolerance),
            float(speed_margin),
            float(future_tolerance),
        )


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One joint state judged: the ``reading`` (None when rejected), the ``status`` (``OK`` or
    the hold status) and, when rejected, a ``detail`` that names the joint and the numbers."""

    reading: JointReading | None
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == OK


class StateCheck:
    """Judges each joint state against the robot and the last accepted reading; remembers the
    newest verdict (:attr:`problem`), which holds the safety filter and refuses enabling."""

    def __init__(self, config: PlausibilityConfig, joint_map: JointMap) -> None:
        if config.lower.shape != (len(joint_map.arm_joints),):
            raise ValueError(
                f"plausibility limits have {config.lower.size} joints, the joint map "
                f"{len(joint_map.arm_joints)}"
            )
        self.config = config
        self.joint_map = joint_map
        self._names = joint_map.arm_joints
        # The bounds every reading is compared with, made once rather than per reading.
        self._low = config.lower - config.tolerance
        self._high = config.upper + config.tolerance
        self._max_speed = config.speed_margin * config.velocity
        self.reset()

    def reset(self) -> None:
        """Forget the reference reading and the newest verdict."""
        self._ref: np.ndarray | None = None
        self._ref_time = 0.0
        self.problem = ""  # status of the newest joint state when it was rejected, else ""
        self.detail = ""

    def _reject(self, status: str, detail: str) -> Verdict:
        self.problem, self.detail = status, detail
        return Verdict(None, status, detail)

    def check(
        self,
        names: Sequence[str],
        position: Sequence[float],
        velocity: Sequence[float],
        t: float,
        now: float | None = None,
    ) -> Verdict:
        """Judge one JointState (its name, position and velocity arrays) stamped ``t`` (s),
        received at ``now`` on the same clock (None: ``t``, no future test). Raises
        ``JointStateError`` for missing joints or wrong sizes."""
        cfg = self.config
        try:
            reading = self.joint_map.read(names, position, velocity)
        except DuplicateJointNames as e:
            return self._reject(HOLD_DUPLICATE_NAMES, str(e))
        if not reading.is_finite():
            return self._reject(HOLD_NONFINITE, "the joint state has a NaN or infinite value")
        if now is not None and t - now > cfg.future_tolerance:
            return self._reject(
                HOLD_FUTURE_STAMP,
                f"the joint state is stamped {t - now:.3f} s in the future (more than "
                f"stamp_future_tolerance {cfg.future_tolerance:g} s): the publisher's clock is "
                "not the bridge's (use_sim_time on one side only?)",
            )
        q = reading.position
        outside = (q < self._low) | (q > self._high)
        if outside.any():
            j = int(np.flatnonzero(outside)[0])
            return self._reject(
                HOLD_OUTSIDE_LIMITS,
                f"{self._names[j]} reads {q[j]:.6g} rad, outside the robot's limits "
                f"[{cfg.lower[j]:.4f}, {cfg.upper[j]:.4f}] by more than {cfg.tolerance:g} rad "
                "(state_tolerance)",
            )
        if self._ref is not None:
            elapsed = max(0.0, t - self._ref_time)
            allowed = self._max_speed * elapsed + cfg.tolerance
            moved = np.abs(q - self._ref)
            jump = moved > allowed
            if jump.any():
                j = int(np.flatnonzero(jump)[0])
                return self._reject(
                    HOLD_STATE_JUMP,
                    f"{self._names[j]} moved {moved[j]:.4g} rad in {elapsed * 1e3:.1f} ms since "
                    f"the last plausible reading; the arm can move at most {allowed[j]:.4g} rad "
                    f"({cfg.speed_margin:g} x {cfg.velocity[j]:g} rad/s + {cfg.tolerance:g} rad)",
                )
        self._ref, self._ref_time = q.copy(), t
        self.problem = self.detail = ""
        return Verdict(reading, OK)
