"""policy_bridge's parameters: their defaults, their validation, and the robot-side limits (the
safety filter's and the joint-state plausibility check's configurations) built from them.

Every parameter is documented in docs/ros2.md; launch/config/*.yaml set them per setup.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from manip_rl.policy_io import ActionSpec
from manip_rl.robots import RobotDescription
from manip_rl.ros_bridge.plausibility import PlausibilityConfig
from manip_rl.ros_bridge.safety import SafetyConfig

# Relative difference allowed between the configured rate's period and the policy's.
RATE_TOLERANCE = 0.01

PARAMETERS: dict[str, object] = {
    "policy": "",  # path of the exported policy file; "" = the shipped PandaReach policy
    # The arm (manip_rl.robots): its joint, velocity and gripper limits bound every command,
    # whatever the policy file says.
    "robot": "panda",
    # The driver's arm joint names in chain order (joint 1 first), optionally followed by the
    # finger joints, when they are neither the robot's nor the policy's; [""] = the robot's own.
    "joint_names": [""],
    "autostart": False,  # configure and activate on start (retrying activation until it passes)
    "control_rate": 0.0,  # Hz; 0 = the policy's own control period; must agree with it
    "trigger": "state",  # "state": steps on joint-state arrival at each tick; "timer": timer only
    # "position": Float64MultiArray; "trajectory": JointTrajectory with positions and velocities
    # within the motion limits; "auto": the robot's (panda position, fr3 trajectory)
    "output": "auto",
    "joint_states_topic": "/joint_states",
    "command_topic": "/forward_position_controller/commands",
    "trajectory_topic": "",  # "" = the robot's (fr3: /fr3_arm_controller/joint_trajectory)
    "gripper_topic": "/gripper_controller/commands",
    "goal_topic": "~/goal",
    "object_pose_topic": "~/object_pose",
    "trajectory_time_from_start": 0.0,  # s; 0 = one control period
    # Trajectory output: fractions of the robot's datasheet limits the plans use, the lateness
    # (s) of a command's start on the arm that they tolerate, and the target-tracking time (s).
    "velocity_margin": 0.8,
    "acceleration_margin": 0.8,
    "jerk_margin": 0.5,
    "trajectory_timing_tolerance": 0.02,
    "trajectory_tracking_time": 0.06,
    # s; after enable the first trajectory only joins the controller's hold to the measured pose
    "trajectory_start_time": 0.2,
    "max_joint_speed": 2.0,  # rad/s; largest command change per step = this x period
    "joint_limit_margin": 0.0,  # rad inside the robot's (and the policy's) joint limits
    "ramp_in_time": 1.0,  # s after enable over which the speed allowance ramps up
    "state_timeout": 0.1,  # s; older joint states make the bridge hold
    "state_tolerance": 0.05,  # rad a reading may lie outside the robot's limits / jump beyond
    "state_speed_margin": 1.5,  # readings may move this many times the robot's velocity limits
    "diagnostics_period": 1.0,  # s
    "stats_path": "",  # JSON file of every period/latency sample, written at shutdown
    # Run the policy on each joint state between control ticks, result discarded, so that its
    # weights stay in the CPU caches: a policy called every 10 ms on a busy machine runs
    # several times slower than one called every 2 ms. Costs one inference per joint state.
    "keep_warm": True,
}

# Parameters that take one of a few words.
CHOICES: dict[str, tuple[str, ...]] = {
    "trigger": ("state", "timer"),
    "output": ("auto", "position", "trajectory"),
}

Get = Callable[[str], object]  # a parameter's value by name (the node's get_parameter)


def check_choices(get: Get) -> None:
    """ValueError naming the parameter when one of :data:`CHOICES` holds another word."""
    for name, allowed in CHOICES.items():
        if get(name) not in allowed:
            raise ValueError(f"parameter '{name}' is {get(name)!r}; use one of {allowed}")


def safety_config(
    get: Get, robot: RobotDescription, action_spec: ActionSpec, period: float
) -> SafetyConfig:
    """The safety filter's limits: the robot's, narrowed by the policy file and the parameters."""
    return SafetyConfig.for_robot(
        robot,
        action_spec,
        period,
        max_joint_speed=float(get("max_joint_speed")),
        limit_margin=float(get("joint_limit_margin")),
        ramp_time=float(get("ramp_in_time")),
        state_timeout=float(get("state_timeout")),
    )


def plausibility_config(get: Get, robot: RobotDescription) -> PlausibilityConfig:
    """What a joint-state reading may show on this robot (limits, speed, with the tolerances)."""
    return PlausibilityConfig.from_robot(
        robot, float(get("state_tolerance")), float(get("state_speed_margin"))
    )


def control_rate_problem(rate: float, period: float) -> str:
    """Why ``control_rate`` does not fit a policy of control period ``period`` ('' if it does)."""
    if rate < 0 or not math.isfinite(rate):
        return f"parameter control_rate={rate} must be >= 0 Hz (0 = the policy's own rate)"
    if rate > 0 and abs(1.0 / rate - period) > RATE_TOLERANCE * period:
        return (
            f"control_rate={rate:g} Hz disagrees with the policy's control period "
            f"{period * 1000:g} ms ({1 / period:g} Hz): the policy was trained at "
            "that period; set control_rate to 0 or to the policy's rate"
        )
    return ""
