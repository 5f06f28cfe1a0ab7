"""The FR3 profile over real DDS between processes: ``sim_arm --robot fr3`` speaks franka_ros2's
interfaces (names, /joint_states merged, /franka/joint_states, fr3_arm_controller's trajectory
topic, the reflex and its error recovery), and ``policy_bridge`` with ``robot: fr3`` serves a
Panda-trained policy to it through the trajectory path without tripping the reflex."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import UInt32  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from manip_rl.robots import FR3  # noqa: E402
from manip_rl.ros_bridge import dds  # noqa: E402
from manip_rl.ros_bridge.commands import _duration  # noqa: E402
from manip_rl.ros_bridge.session import SimSession  # noqa: E402

pytestmark = pytest.mark.ros

DOMAIN = dds.domain_id_for(os.getpid() + 61)
TRAJECTORY_TOPIC = "/fr3_arm_controller/joint_trajectory"
SENSOR = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)  # as sim_arm publishes


def _spin(executor, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        executor.spin_once(timeout_sec=0.005)


def test_a_panda_policy_drives_the_emulated_fr3_without_a_reflex(tmp_path):
    policy = dds.PRETRAINED_DIR / "panda_reach.pt"
    trajectories: list[JointTrajectory] = []
    arm_states: list[JointState] = []
    merged: list[JointState] = []
    with SimSession(
        policy,
        # As bench/fr3_trajectory.py: light on the CPU, so commands reach sim_arm in time.
        bridge_params=["-p", "robot:=fr3", "-p", "keep_warm:=false"],
        sim_params=["-p", "robot:=fr3", "-p", "joint_state_rate:=100.0"],
        # The emulated robot runs as a real arm's controller does, real-time (where this machine
        # allows it); the bridge under test keeps normal scheduling, whatever else loads the CPU.
        sim_rt_priority=20,
        domain_id=DOMAIN,
        workdir=tmp_path,
    ) as s:
        s.node.create_subscription(JointTrajectory, TRAJECTORY_TOPIC, trajectories.append, 50)
        s.node.create_subscription(JointState, "/franka/joint_states", arm_states.append, SENSOR)
        s.node.create_subscription(JointState, "/joint_states", merged.append, SENSOR)
        wins = sum(s.run_episode(2.0) for _ in range(2))
        s.spin(0.3)
        reflexes = s.reflexes
        log = s.log("sim_arm")
    assert reflexes == 0, log[-2000:]
    assert wins >= 1, f"{wins}/2 reach episodes solved on the FR3 path"
    assert len(trajectories) > 20
    for msg in trajectories[-10:]:
        assert list(msg.joint_names) == list(FR3.joint_names)
        assert msg.header.stamp.sec > 0  # stamped: the controller starts it at the stamp
        assert all(len(p.velocities) == 7 for p in msg.points)
        assert np.allclose(msg.points[-1].velocities, 0.0)  # each plan ends at rest
        times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
        assert times == sorted(times) and times[0] > 0
    assert arm_states and list(arm_states[-1].name) == list(FR3.joint_names)
    assert list(merged[-1].name) == [*FR3.joint_names, *FR3.finger_joint_names]


def test_a_violent_command_faults_the_emulated_fr3_until_error_recovery(tmp_path):
    with dds.local_context(DOMAIN + 1) as ctx:
        args = ["--robot", "fr3", "--ros-args", "-p", "randomization:=none"]
        args += ["-p", "actuator_latency:=0.0", "-p", "sensor_latency:=0.0"]
        proc = dds.start_node("sim-arm", args, DOMAIN + 1, tmp_path / "sim_arm.log")
        from rclpy.executors import SingleThreadedExecutor

        node = rclpy.create_node(f"fr3_test_{os.getpid()}", context=ctx)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        try:
            states: list[JointState] = []
            reflexes: list[int] = []
            node.create_subscription(JointState, "/joint_states", states.append, SENSOR)
            node.create_subscription(
                UInt32, "/sim_arm/reflexes", lambda m: reflexes.append(m.data), 10
            )
            pub = node.create_publisher(JointTrajectory, TRAJECTORY_TOPIC, 10)
            recovery = node.create_client(Trigger, "/action_server/error_recovery")
            end = time.monotonic() + 60
            while not (states and reflexes and pub.get_subscription_count()):
                assert time.monotonic() < end, (tmp_path / "sim_arm.log").read_text()[-2000:]
                _spin(executor, 0.1)
            assert reflexes[-1] == 0
            assert list(states[-1].name) == [*FR3.joint_names, *FR3.finger_joint_names]

            def position() -> np.ndarray:
                return np.array(states[-1].position[:7])

            def send(q, seconds: float) -> None:
                point = JointTrajectoryPoint(
                    positions=[float(x) for x in q], velocities=[0.0] * 7,
                    time_from_start=_duration(seconds),
                )  # fmt: skip
                pub.publish(JointTrajectory(joint_names=list(FR3.joint_names), points=[point]))

            home = position()
            send(home + 0.4, 0.05)  # 0.4 rad in 50 ms: about 12 rad/s, far past 2.62 rad/s
            _spin(executor, 1.0)
            assert reflexes[-1] == 1
            log = (tmp_path / "sim_arm.log").read_text()
            assert "reflex: joint_motion_generator_" in log and "error_recovery" in log
            stopped = position()
            assert np.abs(stopped - home).max() < 0.2  # it stopped on the way
            send(home, 2.0)  # refused while faulted
            _spin(executor, 1.0)
            np.testing.assert_allclose(position(), stopped, atol=0.01)

            assert recovery.wait_for_service(timeout_sec=10)
            future = recovery.call_async(Trigger.Request())
            end = time.monotonic() + 10
            while not future.done() and time.monotonic() < end:
                _spin(executor, 0.01)
            response = future.result()
            assert (
                response.success and "recovered from: joint_motion_generator_" in response.message
            )
            send(home, 2.0)  # gentle: 2 s back home
            _spin(executor, 2.8)
            np.testing.assert_allclose(position(), home, atol=0.02)
            assert reflexes[-1] == 1  # no new fault
        finally:
            executor.shutdown()
            node.destroy_node()
            dds.stop_node(proc)


def test_the_bridges_output_does_not_write_a_plan_found_late_at_the_write():
    """CommandOutput over DDS in this process: a new plan older than max_age when its message is
    built is not published (its age comes back, for the node to take the step back); an on-time
    one is, and so is a plan re-sent unchanged whatever its age (the start plan's rest)."""
    from rclpy.executors import SingleThreadedExecutor

    from manip_rl.robots.motion import TrajectoryPlan
    from manip_rl.ros_bridge.commands import CommandOutput

    with dds.local_context(DOMAIN + 2) as ctx:
        node = rclpy.create_node(f"fr3_output_{os.getpid()}", context=ctx)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        got: list[JointTrajectory] = []
        node.create_subscription(JointTrajectory, TRAJECTORY_TOPIC, got.append, 10)
        params = {
            "output": "trajectory",
            "command_topic": "/unused",
            "trajectory_topic": TRAJECTORY_TOPIC,
            "trajectory_time_from_start": 0.0,
            "gripper_topic": "/unused_gripper",
        }
        try:
            out = CommandOutput(node, params.__getitem__, FR3.joint_names, False, 0.04)

            def plan(t0: float) -> TrajectoryPlan:
                rest = np.zeros((2, 7))
                pos = np.array([FR3.home, FR3.home])
                return TrajectoryPlan(t0, np.array([0.0, 0.04]), pos, rest, rest.copy())

            def received(n: int) -> bool:
                end = time.monotonic() + 5
                while len(got) < n and time.monotonic() < end:
                    _spin(executor, 0.02)
                _spin(executor, 0.1)
                return len(got) == n

            end = time.monotonic() + 10
            while not out.publishers[0].get_subscription_count():
                assert time.monotonic() < end
                _spin(executor, 0.05)
            on_time = plan(out.plan_clock())
            assert out.publish(FR3.home, None, on_time, max_age=0.005) is None
            assert received(1)
            late = plan(out.plan_clock() - 0.012)
            age = out.publish(FR3.home, None, late, max_age=0.005)
            assert age is not None and age >= 0.012
            assert received(1)  # nothing more arrived
            _spin(executor, 0.02)
            assert out.publish(FR3.home, None, on_time, max_age=0.005) is None  # a re-send
            assert received(2)
        finally:
            executor.shutdown()
            node.destroy_node()
