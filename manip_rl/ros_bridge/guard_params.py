"""policy_bridge's parameters for the guards around the policy (issue #16): perception, time,
operator safety and the gripper, with the configurations built from them. ROS-free.

The node declares these next to :data:`manip_rl.ros_bridge.bridge_params.PARAMETERS`; every one
is documented in docs/ros2.md.
"""

from __future__ import annotations

import dataclasses

from manip_rl.robots import RobotDescription
from manip_rl.ros_bridge import bridge_params
from manip_rl.ros_bridge.gripper import GRIPPER_BACKENDS, GRIPPER_MODES, GripperConfig
from manip_rl.ros_bridge.operator_safety import (
    HEARTBEAT_MODES,
    OperatorConfig,
    heartbeat_required,
)
from manip_rl.ros_bridge.perception import FrameTransform, GuardConfig
from manip_rl.ros_bridge.plausibility import PlausibilityConfig

PARAMETERS: dict[str, object] = {
    # Perception (goal and object pose): frames, stamps, jumps.
    "base_frame": "",  # frame the goal and object pose must be in; "" = the robot's <name>_link0
    "camera_frame": "",  # a second accepted frame, mapped by the fixed transform below
    "camera_translation": [0.0, 0.0, 0.0],  # m, base <- camera_frame
    "camera_rotation": [0.0, 0.0, 0.0, 1.0],  # x y z w (tf2's order), base <- camera_frame
    "goal_timeout": 0.5,  # s; an older goal (by stamp) holds; 0 = a fixed goal never expires
    "object_pose_timeout": 0.2,  # s; an older object pose (by stamp) holds
    "stamp_future_tolerance": 0.02,  # s a stamp may lie ahead of the node clock
    "perception_max_jump": 0.05,  # m a reading may jump beyond perception_max_speed x elapsed
    "perception_max_speed": 1.0,  # m/s
    "object_occluded_hold": 1.0,  # s an object pose may be used while grasped (occluded)
    # m: fingers commanded closed that stopped between these two openings hold an object
    "grasp_min_opening": 0.005,
    "grasp_max_opening": 0.07,
    # Operator safety.
    "heartbeat": "auto",  # "required", "off", or "auto": required for the fr3 profile
    "heartbeat_topic": "~/heartbeat",  # std_msgs/Bool; false = released
    "heartbeat_timeout": 0.5,  # s
    "run_time_limit": 0.0,  # s after an enable until it lapses; 0 = none
    "workspace_min": [-0.9, -0.9, -0.1],  # m, TCP box in the base frame
    "workspace_max": [0.9, 0.9, 1.2],  # m
    # Gripper.
    "gripper_backend": "auto",  # "topic", "action", or "auto": the action if control_msgs imports
    "gripper_action": "/fr3_gripper/gripper_action",  # control_msgs/GripperCommand
    "gripper_mode": "discrete",  # or "continuous": the opening every step (topic backend only)
    "gripper_open_width": 0.08,  # m sent for open
    "gripper_closed_width": 0.0,  # m sent for closed (the grasp stops on the object)
    "gripper_close_below": 0.03,  # m: the policy's opening below this closes
    "gripper_open_above": 0.05,  # m: above this opens (between: no change)
    "gripper_force": 20.0,  # N, max_effort of an action goal
    "gripper_keepalive": 1.0,  # s between re-sends of the state (topic backend); 0 = none
}

CHOICES: dict[str, tuple[str, ...]] = {
    "heartbeat": HEARTBEAT_MODES,
    "gripper_backend": GRIPPER_BACKENDS,
    "gripper_mode": GRIPPER_MODES,
}

Get = bridge_params.Get


def check_choices(get: Get) -> None:
    """ValueError naming the parameter when one of :data:`CHOICES` holds another word."""
    for name, allowed in CHOICES.items():
        if get(name) not in allowed:
            raise ValueError(f"parameter '{name}' is {get(name)!r}; use one of {allowed}")


def _floats(get: Get, name: str) -> list[float]:
    try:
        return [float(x) for x in get(name)]
    except (TypeError, ValueError):
        raise ValueError(f"parameter {name} must be a list of numbers, got {get(name)!r}") from None


def base_frame(get: Get, robot: RobotDescription) -> str:
    return str(get("base_frame")) or f"{robot.name}_link0"


def perception_configs(get: Get, robot: RobotDescription) -> tuple[GuardConfig, GuardConfig]:
    """The goal's and the object pose's guard configurations."""
    common = dict(
        base_frame=base_frame(get, robot),
        future_tolerance=float(get("stamp_future_tolerance")),
        max_jump=float(get("perception_max_jump")),
        max_speed=float(get("perception_max_speed")),
        camera_frame=str(get("camera_frame")),
        camera=FrameTransform(_floats(get, "camera_translation"), _floats(get, "camera_rotation")),
    )
    goal = GuardConfig(timeout=float(get("goal_timeout")), **common)
    timeout = float(get("object_pose_timeout"))
    if timeout <= 0:
        raise ValueError(
            "parameter object_pose_timeout must be > 0 s: an object pose from perception ages"
        )
    hold = float(get("object_occluded_hold"))
    if 0 < hold < timeout:
        raise ValueError(
            f"parameter object_occluded_hold ({hold:g} s) must be 0 or at least "
            f"object_pose_timeout ({timeout:g} s)"
        )
    obj = GuardConfig(timeout=timeout, occluded_hold=hold, **common)
    return goal, obj


def plausibility_config(get: Get, robot: RobotDescription) -> PlausibilityConfig:
    """:func:`bridge_params.plausibility_config` with the stamp's future tolerance."""
    return dataclasses.replace(
        bridge_params.plausibility_config(get, robot),
        future_tolerance=float(get("stamp_future_tolerance")),
    )


def operator_config(get: Get, robot: RobotDescription) -> OperatorConfig:
    return OperatorConfig(
        heartbeat_required=heartbeat_required(str(get("heartbeat")), robot.name),
        heartbeat_timeout=float(get("heartbeat_timeout")),
        run_time_limit=float(get("run_time_limit")),
        workspace_min=_floats(get, "workspace_min"),
        workspace_max=_floats(get, "workspace_max"),
    )


def gripper_config(get: Get) -> GripperConfig:
    return GripperConfig(
        open_width=float(get("gripper_open_width")),
        closed_width=float(get("gripper_closed_width")),
        close_below=float(get("gripper_close_below")),
        open_above=float(get("gripper_open_above")),
        force=float(get("gripper_force")),
        keepalive=float(get("gripper_keepalive")),
        continuous=get("gripper_mode") == "continuous",
    )
