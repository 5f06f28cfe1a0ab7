"""policy_bridge's command output: the arm's targets as ros2_control's forward position
controller (``Float64MultiArray``) or joint trajectory controller (``JointTrajectory``) takes
them, and the gripper's opening as two finger positions.

A trajectory is the safety filter's plan (:class:`~manip_rl.robots.motion.TrajectoryPlan`):
stamped with the time its first knot stands for (the controller starts it then, not on
arrival), one point per control period ahead with positions and velocities (the controller's
cubic spline between them is the plan), the last at rest."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from manip_rl.robots.motion import TrajectoryPlan


def clock_offset_ns(node: Node, samples: int = 20) -> int:
    """``node``'s clock minus ``time.perf_counter()``, in ns: the pair read closest together."""
    best = None
    for _ in range(samples):
        t0 = time.perf_counter_ns()
        ros = node.get_clock().now().nanoseconds
        t1 = time.perf_counter_ns()
        if best is None or t1 - t0 < best[0]:
            best = (t1 - t0, ros - (t0 + t1) // 2)
    return best[1]


def _duration(seconds: float) -> Duration:
    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


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
        self.kind = "position" if self._position else "trajectory"
        self._node = node
        # Plans are timed on plan_clock. On the wall clock that is perf_counter, mapped to the
        # node clock by an offset measured once: two clock reads per message would differ by
        # however long the process was descheduled between them, and a spline point a few ms
        # ahead of the controller's state turns a 0.1 ms error into a large acceleration. With
        # use_sim_time the node clock is /clock's, which no fixed offset follows: plans are
        # timed on the node clock itself, so the stamps are sim time as the controller's are.
        self.sim_time = bool(node.get_parameter("use_sim_time").value)
        if self.sim_time:
            clock = node.get_clock()
            self.plan_clock: Callable[[], float] = lambda: clock.now().nanoseconds * 1e-9
            self._clock_offset_ns = 0
        else:
            self.plan_clock = time.perf_counter
            self._clock_offset_ns = clock_offset_ns(node)
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
        self._sent_plan: TrajectoryPlan | None = None

    def publish(
        self,
        joints: np.ndarray,
        gripper: float | None,
        plan: TrajectoryPlan | None = None,
        max_age: float | None = None,
    ) -> float | None:
        """Send joint targets (rad, ``joint_names`` order), or with the trajectory output the
        ``plan`` (its ``t0`` on :attr:`plan_clock`), and, if given, a gripper opening (m).
        A new plan more than ``max_age`` s old once its message is built is not sent: its age
        is returned (None when sent). A plan re-sent unchanged is sent whatever its age."""
        values = [float(x) for x in joints]
        if self._position:
            self._arm.publish(Float64MultiArray(data=values))
        elif plan is not None:
            msg = JointTrajectory()
            msg.joint_names = self._joint_names
            # The stamp is the instant of the plan's first knot, on the node's clock.
            stamp = int(round(plan.t0 * 1e9)) + self._clock_offset_ns
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
            msg.points = [
                JointTrajectoryPoint(
                    positions=q.tolist(), velocities=v.tolist(), time_from_start=_duration(t)
                )
                for t, q, v in plan.points()
            ]
            if max_age is not None and plan is not self._sent_plan:
                age = self.plan_clock() - plan.t0
                if age > max_age:
                    return age
            self._arm.publish(msg)
            self._sent_plan = plan
        else:
            msg = JointTrajectory()
            msg.joint_names = self._joint_names
            msg.points = [JointTrajectoryPoint(positions=values, time_from_start=self._tfs)]
            self._arm.publish(msg)
        if gripper is not None and self._gripper is not None:
            self._gripper.publish(Float64MultiArray(data=[gripper / 2, gripper / 2]))
        return None
