"""Simulated setup: the MuJoCo Panda (sim_arm) and the policy bridge, each its own process.

    ros2 launch launch/sim.launch.py policy:=/path/to/policy.pt

Needs ROS 2 (for `ros2 launch`) and this project installed (`pip install -e .[ros]`), which puts
the `manip-rl` executable on the PATH. Without ROS 2, `manip-rl sim-arm` and `manip-rl serve`
(or `manip-rl demo`) start the same nodes with the same parameter file, launch/config/sim.yaml.
"""

import os

from launch.actions import DeclareLaunchArgument, ExecuteProcess
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config", "sim.yaml")


def generate_launch_description():
    policy = LaunchConfiguration("policy")
    params = LaunchConfiguration("params_file")
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "policy", default_value="", description="policy file ('' = the shipped one)"
            ),
            DeclareLaunchArgument("params_file", default_value=CONFIG),
            ExecuteProcess(
                cmd=["manip-rl", "sim-arm", "--params-file", params],
                name="sim_arm",
                output="screen",
            ),
            ExecuteProcess(
                cmd=[
                    "manip-rl",
                    "serve",
                    "--params-file",
                    params,
                    "--ros-args",
                    "-p",
                    ["policy:=", policy],
                ],
                name="policy_bridge",
                output="screen",
            ),
        ]
    )
