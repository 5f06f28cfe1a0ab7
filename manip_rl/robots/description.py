"""What a robot is to manip_rl, as data: joint names, limits, home pose, TCP and model source.

A :class:`RobotDescription` needs numpy only, so the robot side (``policy_io``, the ROS 2
bridge's safety core) can read it without MuJoCo. Forward kinematics lives in
:mod:`manip_rl.robots.kinematics`, which imports MuJoCo when it is first built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class RobotDescription:
    """One arm: names and limits in the real robot's joint convention (zero as in its datasheet).

    ``lower``/``upper``: position limits (rad); ``velocity``, ``acceleration``, ``jerk``: per-joint
    limits (rad/s, rad/s^2, rad/s^3); ``home``: the ready pose (rad); ``gripper_max_opening``:
    metres between the fingers. ``sim_joint_offsets``: simulator joint = robot joint - offset,
    for a simulation model whose joint zeros differ from the real robot's.
    """

    name: str
    joint_names: tuple[str, ...]
    finger_joint_names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray
    home: np.ndarray
    gripper_max_opening: float
    sim_joint_offsets: np.ndarray
    source: str  # where the limits come from (datasheet), for error messages and docs

    def __post_init__(self) -> None:
        n = len(self.joint_names)
        for field in (
            "lower",
            "upper",
            "velocity",
            "acceleration",
            "jerk",
            "home",
            "sim_joint_offsets",
        ):
            value = np.asarray(getattr(self, field), dtype=np.float64)
            value.setflags(write=False)
            if value.shape != (n,) or not np.isfinite(value).all():
                raise ValueError(f"robot {self.name!r}: {field} must be {n} finite numbers")
            object.__setattr__(self, field, value)
        if len(set(self.joint_names)) != n:
            raise ValueError(f"robot {self.name!r}: joint names repeat: {self.joint_names}")
        if (self.lower >= self.upper).any():
            raise ValueError(f"robot {self.name!r}: a lower joint limit is not below its upper")
        for field in ("velocity", "acceleration", "jerk"):
            if (getattr(self, field) <= 0).any():
                raise ValueError(f"robot {self.name!r}: {field} limits must be > 0")
        if ((self.home < self.lower) | (self.home > self.upper)).any():
            raise ValueError(f"robot {self.name!r}: the home pose is outside the joint limits")

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    def with_joint_names(
        self, joint_names: Sequence[str], finger_joint_names: Sequence[str] | None = None
    ) -> RobotDescription:
        """The same robot under other joint names (a remap for a differently named driver)."""
        fingers = self.finger_joint_names if finger_joint_names is None else finger_joint_names
        return dataclasses.replace(
            self, joint_names=tuple(joint_names), finger_joint_names=tuple(fingers)
        )

    def within_limits(self, position: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
        """Per joint: is ``position`` inside ``[lower - tolerance, upper + tolerance]``?"""
        position = np.asarray(position, dtype=np.float64)
        return (position >= self.lower - tolerance) & (position <= self.upper + tolerance)
