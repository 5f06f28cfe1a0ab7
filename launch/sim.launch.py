"""Simulated setup: the MuJoCo Panda (sim_arm) and the policy bridge, each its own process.

    ros2 launch launch/sim.launch.py policy:=/path/to/policy.pt

Needs ROS 2 (for `ros2 launch`) and this project installed (`pip install -e .[ros]`), which puts
the `manip-rl` executable on the PATH. Without ROS 2, `manip-rl sim-arm` and `manip-rl serve`
(or `manip-rl demo`) start the same nodes with the same parameter file, launch/config/sim.yaml.

Pin each node to CPUs of its own and run it under real-time priority (docs/ros2.md):

    ros2 launch launch/sim.launch.py sim_cpus:=0 bridge_cpus:=1 rt_priority:=20
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
            DeclareLaunchArgument(
                "sim_cpus", default_value="", description="CPUs for sim_arm, e.g. 0 ('' = all)"
            ),
            DeclareLaunchArgument(
                "bridge_cpus", default_value="", description="CPUs for the bridge ('' = all)"
            ),
            DeclareLaunchArgument(
                "rt_priority", default_value="0", description="SCHED_FIFO priority (0 = off)"
            ),
            ExecuteProcess(
                cmd=[
                    "manip-rl",
                    "sim-arm",
                    "--params-file",
                    params,
                    ["--cpus=", LaunchConfiguration("sim_cpus")],
                    ["--rt-priority=", LaunchConfiguration("rt_priority")],
                ],
                name="sim_arm",
                output="screen",
                additional_env={"PYTHONPATH": ""},  # see robot.launch.py
            ),
            ExecuteProcess(
                cmd=[
                    "manip-rl",
                    "serve",
                    "--params-file",
                    params,
                    ["--cpus=", LaunchConfiguration("bridge_cpus")],
                    ["--rt-priority=", LaunchConfiguration("rt_priority")],
                    "--ros-args",
                    "-p",
                    ["policy:=", policy],
                ],
                name="policy_bridge",
                output="screen",
                additional_env={"PYTHONPATH": ""},  # see robot.launch.py
            ),
        ]
    )
