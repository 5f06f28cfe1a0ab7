"""``manip-rl serve``: the command line of policy_bridge (its arguments, the rclpy argument list
they become, and the run), and :func:`ros_arguments`, shared with ``manip-rl sim-arm``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

from manip_rl.ros_bridge import dds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", help="policy file (default: the shipped PandaReach policy)")
    p.add_argument(
        "--params-file",
        help=f"ROS 2 parameter YAML (default: {dds.SIM_PARAMS.relative_to(dds.REPO_ROOT)}; "
        "launch/config/robot.yaml for a real arm)",
    )
    p.add_argument("--autostart", action="store_true", help="configure and activate on start")
    add_robot_argument(p)
    dds.add_realtime_arguments(p)
    p.add_argument(
        "--ros-args",
        dest="ros_args",
        nargs=argparse.REMAINDER,
        default=[],
        help="further ROS 2 arguments, e.g. --ros-args -p control_rate:=25.0",
    )


def add_robot_argument(p: argparse.ArgumentParser) -> None:
    """``--robot panda|fr3``: the robot profile (names, limits, topics, command output)."""
    p.add_argument(
        "--robot",
        choices=("panda", "fr3"),
        help="robot profile (sets -p robot:=...; default: the parameter file's, else panda)",
    )


def ros_arguments(args: argparse.Namespace, default_params: Path) -> list[str]:
    """The rclpy argument list a node is started with (what a launch file would pass)."""
    params = args.params_file or (str(default_params) if default_params.is_file() else None)
    out = ["--ros-args"]
    if params:
        if not Path(params).is_file():
            raise SystemExit(f"parameter file {params} does not exist (--params-file)")
        out += ["--params-file", str(params)]
    if getattr(args, "policy", None):
        if not Path(args.policy).is_file():
            raise SystemExit(f"policy file {args.policy} does not exist (--policy)")
        out += ["-p", f"policy:={Path(args.policy).resolve()}"]
    if getattr(args, "autostart", False):
        out += ["-p", "autostart:=true"]
    if getattr(args, "robot", None):
        out += ["-p", f"robot:={args.robot}"]
    extra = [a for a in (args.ros_args or []) if a != "--ros-args"]
    # A launch file passes `-p policy:=` when its policy argument is left empty: keep the default.
    i = 0
    while i < len(extra):
        if extra[i] == "-p" and i + 1 < len(extra) and extra[i + 1].endswith(":="):
            del extra[i : i + 2]
        else:
            i += 1
    return out + extra


def run(args: argparse.Namespace) -> int:
    """``manip-rl serve``: start a policy_bridge node and spin it until interrupted."""
    # Imported here: policy_bridge re-exports this module's names for `manip-rl serve`.
    from manip_rl.ros_bridge.policy_bridge import PolicyBridge

    ros_args = ros_arguments(args, dds.SIM_PARAMS)
    messages = dds.apply_realtime_arguments(args)
    rclpy.init(args=["manip-rl-serve", *ros_args])
    dds.stop_on_sigterm()
    node = None
    code = 0
    try:
        node = PolicyBridge()
        for message in messages:
            node.get_logger().info(message)
        if node.get_parameter("autostart").value and not node.start_autostart():
            # An operator who asked for autostart expects a serving bridge or an exit that says
            # why, not an unconfigured node sitting there.
            print(
                f"manip-rl serve: configure failed, exiting: {node.configure_error}",
                file=sys.stderr,
            )
            code = 2
        else:
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            dds.spin_until_stopped(executor, node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            stats_path = node.get_parameter("stats_path").value
            if stats_path:
                node.write_stats(stats_path)
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code
