"""Robot profiles on the ROS side: the defaults a ``robot`` parameter brings (command output and
topics as the robot's ROS 2 stack names them), the robot a policy is served on (joints matched by
role, an optional ``joint_names`` remap, the tighter of two limit sets), and the motion limits of
the trajectory output. ROS-free.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from manip_rl.policy_io import ActionSpec
from manip_rl.robots import ROBOTS, RobotDescription
from manip_rl.robots.motion import MotionLimits
from manip_rl.robots.roles import robot_for_policy

Get = Callable[[str], object]

# What a parameter left at "auto" (output) or "" (a topic) means on each robot. The Panda under
# plain ros2_control: a forward position controller (it interpolates the 25 Hz targets itself).
# The FR3 under franka_ros2: its arm controller is a joint_trajectory_controller,
# fr3_arm_controller (franka_bringup/config/controllers.yaml, franka_fr3_moveit_config), and
# franka_ros2 has no forward command controller.
PROFILE_DEFAULTS: dict[str, dict[str, object]] = {
    "panda": {
        "output": "position",
        "trajectory_topic": "/joint_trajectory_controller/joint_trajectory",
    },
    "fr3": {
        "output": "trajectory",
        "trajectory_topic": "/fr3_arm_controller/joint_trajectory",
    },
}
AUTO = ("", "auto")


def with_profile(get: Get, robot: RobotDescription) -> Get:
    """``get`` with the values left at "auto"/"" replaced by ``robot``'s profile defaults."""
    defaults = PROFILE_DEFAULTS.get(robot.name, PROFILE_DEFAULTS["panda"])

    def resolved(name: str) -> object:
        value = get(name)
        if name in defaults and isinstance(value, str) and value in AUTO:
            return defaults[name]
        return value

    return resolved


def serving_robot(get: Get, robot: RobotDescription, spec: ActionSpec) -> RobotDescription:
    """The robot a policy with action spec ``spec`` drives: ``robot`` under the names of the
    ``joint_names`` parameter (if set), within the limits of the robot the policy was trained on
    as well as its own (a Panda policy on an FR3: the tighter of both)."""
    names = get("joint_names") or ()
    if isinstance(names, str):
        names = [names]
    return robot_for_policy(robot, spec.joint_names, list(names), tuple(ROBOTS.values()))


def motion_limits(
    get: Get, robot: RobotDescription, lower: np.ndarray, upper: np.ndarray, period: float
) -> MotionLimits | None:
    """The trajectory output's motion limits (None for the position output): ``robot``'s
    velocity, acceleration and jerk limits times the ``*_margin`` parameters, positions within
    ``lower``/``upper`` (the safety filter's), segments of one control period (or
    ``trajectory_time_from_start``)."""
    if get("output") != "trajectory":
        return None
    segment = float(get("trajectory_time_from_start")) or float(period)
    try:
        return MotionLimits.for_robot(
            robot,
            segment,
            lower=lower,
            upper=upper,
            velocity_margin=float(get("velocity_margin")),
            acceleration_margin=float(get("acceleration_margin")),
            jerk_margin=float(get("jerk_margin")),
            timing_tolerance=float(get("trajectory_timing_tolerance")),
            tracking_time=float(get("trajectory_tracking_time")),
            start_time=float(get("trajectory_start_time")),
        )
    except ValueError as e:
        raise ValueError(f"trajectory output parameters: {e}") from None
