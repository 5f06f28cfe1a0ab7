"""policy_bridge's command output: the arm's targets as ros2_control's forward position
controller (``Float64MultiArray``) or joint trajectory controller (``JointTrajectory``) takes
them, and the gripper's opening as two finger positions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint


class CommandOutput:
    """The command publishers of one configured bridge (parameters ``output``,
    ``command_topic``, ``trajectory_topic``, ``trajectory_time_from_start``, ``gripper_topic``
    read once here: the control path does no parameter look-ups)."""

    def __init__(
        self,
        node: Node,
        get: Callable[[str], object],
        joint_names: Sequence[str],
        gripper: bool,
        period: float,
    ) -> None:
        self._position = get("output") == "position"
        self._joint_names = list(joint_names)
        # 0 = one control period: the controller reaches each target as the next one comes.
        tfs = float(get("trajectory_time_from_start")) or period
        self._tfs = Duration(sec=int(tfs), nanosec=int((tfs - int(tfs)) * 1e9))
        if self._position:
            self._arm = node.create_publisher(Float64MultiArray, get("command_topic"), 10)
        else:
            self._arm = node.create_publisher(JointTrajectory, get("trajectory_topic"), 10)
        self._gripper = (
            node.create_publisher(Float64MultiArray, get("gripper_topic"), 10) if gripper else None
        )
        self.publishers = [p for p in (self._arm, self._gripper) if p is not None]

    def publish(self, joints: np.ndarray, gripper: float | None) -> None:
        """Send joint targets (rad, ``joint_names`` order) and, if given, a gripper opening (m)."""
        values = [float(x) for x in joints]
        if self._position:
            self._arm.publish(Float64MultiArray(data=values))
        else:
            msg = JointTrajectory()
            msg.joint_names = self._joint_names
            msg.points = [JointTrajectoryPoint(positions=values, time_from_start=self._tfs)]
            self._arm.publish(msg)
        if gripper is not None and self._gripper is not None:
            self._gripper.publish(Float64MultiArray(data=[gripper / 2, gripper / 2]))
