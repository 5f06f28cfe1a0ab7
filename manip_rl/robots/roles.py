"""Matching a policy's joints to a robot's by role, and remapping a robot's joint names.

A policy file names the joints it was trained on (``panda_joint1..7``); a robot's driver names
its own (franka_ros2's FR3: ``fr3_joint1..7``, ``fr3_finger_joint1/2``). The role of an arm
joint is its index along the chain (1..7, the number its name ends with), so a Panda-trained
policy drives an FR3 (the same kinematics) joint for joint. It then runs within the tighter of
the two robots' limits (:func:`tighter_limits`): the FR3's range, the Panda's where that is
narrower, and so for velocity, acceleration and jerk. For any other naming a ``joint_names``
parameter lists the driver's names in role order (:func:`robot_for_policy`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

import numpy as np

from manip_rl.robots.description import RobotDescription

_INDEX = re.compile(r"(\d+)$")


def joint_role(name: str) -> int | None:
    """The chain index a joint name ends with (``fr3_joint4`` -> 4), or None."""
    m = _INDEX.search(name)
    return int(m.group(1)) if m else None


def trained_robot(joint_names: Sequence[str], robots: Sequence[RobotDescription]):
    """The robot of ``robots`` whose arm joint names are ``joint_names`` (None if none is)."""
    for robot in robots:
        if tuple(joint_names) == robot.joint_names:
            return robot
    return None


def tighter_limits(robot: RobotDescription, other: RobotDescription | None) -> RobotDescription:
    """``robot`` (its names, home and model) within the tighter of its and ``other``'s limits:
    a policy trained on ``other`` never commanded beyond them, ``robot`` never can."""
    if other is None or other is robot:
        return robot
    if other.dof != robot.dof:
        raise ValueError(f"robot {robot.name!r} has {robot.dof} joints, {other.name!r} {other.dof}")
    return dataclasses.replace(
        robot,
        lower=np.maximum(robot.lower, other.lower),
        upper=np.minimum(robot.upper, other.upper),
        velocity=np.minimum(robot.velocity, other.velocity),
        acceleration=np.minimum(robot.acceleration, other.acceleration),
        jerk=np.minimum(robot.jerk, other.jerk),
        gripper_max_opening=min(robot.gripper_max_opening, other.gripper_max_opening),
        source=f"{robot.source}, within {other.name}'s limits",
    )


def robot_for_policy(
    robot: RobotDescription,
    policy_joint_names: Sequence[str],
    joint_names: Sequence[str] = (),
    robots: Sequence[RobotDescription] = (),
) -> RobotDescription:
    """The robot a policy is served on: ``robot`` renamed by ``joint_names`` (7 arm names in
    role order, optionally followed by the finger names; empty: the robot's own), its limits
    the tighter of its own and those of the robot of ``robots`` the policy was trained on.

    Raises ValueError naming the parameter when ``joint_names`` has the wrong length or repeats
    a name, or when the policy's joint roles are not the chain's 1..n in order."""
    names = [str(n) for n in joint_names if str(n)]
    if names:
        n = robot.dof
        if len(names) not in (n, n + len(robot.finger_joint_names)):
            raise ValueError(
                f"parameter 'joint_names' lists {len(names)} names; give the {n} arm joints in "
                f"chain order (joint 1 first), optionally followed by the "
                f"{len(robot.finger_joint_names)} finger joints"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"parameter 'joint_names' repeats a name: {names}")
        fingers = names[n:] or None
        robot = robot.with_joint_names(names[:n], fingers)
    roles = [joint_role(n) for n in policy_joint_names]
    if roles != list(range(1, robot.dof + 1)):
        raise ValueError(
            f"the policy file's action.joint_names {list(policy_joint_names)} are not the arm's "
            f"joints 1..{robot.dof} in chain order (names ending in 1..{robot.dof}); the file is "
            "damaged or edited, export the policy again"
        )
    return tighter_limits(robot, trained_robot(policy_joint_names, robots))
