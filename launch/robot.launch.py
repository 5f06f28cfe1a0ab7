"""Real arm: the policy bridge alone, next to a Franka Panda under ros2_control (franka_ros2
with a forward_position_controller or joint_trajectory_controller running).

    ros2 launch launch/robot.launch.py policy:=/path/to/policy.pt   # robot:=fr3 for an FR3
    ros2 lifecycle set /policy_bridge configure
    ros2 lifecycle set /policy_bridge activate      # refuses, with the reason, on a mismatch
    ros2 service call /policy_bridge/enable std_srvs/srv/SetBool "{data: true}"

Pin the bridge to an isolated CPU under real-time priority: `cpus:=3 rt_priority:=20`.

An FR3 under franka_ros2: `params_file:=launch/config/fr3.yaml` (see docs/ros2.md).

Without ROS 2: `manip-rl serve --params-file launch/config/robot.yaml --policy ...`.
"""

import os

from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config", "robot.yaml")


def generate_launch_description():
    policy = LaunchConfiguration("policy")
    params = LaunchConfiguration("params_file")
    return LaunchDescription(
        [
            DeclareLaunchArgument("policy", description="the exported policy file (.pt)"),
            DeclareLaunchArgument("params_file", default_value=CONFIG),
            DeclareLaunchArgument(
                "robot",
                default_value="",
                description="the arm (manip_rl.robots: panda, fr3; '' = the parameter file's); "
                "its limits bound every command",
            ),
            DeclareLaunchArgument(
                "cpus", default_value="", description="CPUs for the bridge, e.g. 3 ('' = all)"
            ),
            DeclareLaunchArgument(
                "rt_priority", default_value="0", description="SCHED_FIFO priority (0 = off)"
            ),
            ExecuteProcess(
                cmd=[
                    "manip-rl",
                    "serve",
                    "--params-file",
                    params,
                    ["--cpus=", LaunchConfiguration("cpus")],
                    ["--rt-priority=", LaunchConfiguration("rt_priority")],
                    "--ros-args",
                    "-p",
                    ["policy:=", policy],
                    "-p",
                    ["robot:=", LaunchConfiguration("robot")],
                ],
                name="policy_bridge",
                output="screen",
                # manip-rl is the venv's (first on PATH: activate the venv after sourcing ROS);
                # the ROS install's PYTHONPATH (another Python's packages) must not reach it.
                additional_env={"PYTHONPATH": ""},
            ),
        ]
    )
