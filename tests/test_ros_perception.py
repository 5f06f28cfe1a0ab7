"""The bridge's guards over real DDS (issue #16): ``manip-rl serve`` in its own process, this
process playing the arm, perception, the operator's heartbeat and, for sim time, ``/clock``.

Each bad input must make the bridge hold (repeat its last command, or send nothing) with a log
line; no command leaves the robot's limits. The gripper's action backend is not here:
control_msgs has no wheel on PyPI (tests/test_operator_safety.py covers its decisions).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from geometry_msgs.msg import PointStamped  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402
from test_ros_bridge import GOAL_TOPIC, STATE_TIMEOUT, FakeArm, within_real_limits  # noqa: E402

from manip_rl.ros_bridge import dds  # noqa: E402
from manip_rl.ros_bridge.perception import stamp_seconds  # noqa: E402

pytestmark = pytest.mark.ros

POLICY = str(dds.PRETRAINED_DIR / "panda_reach.pt")
BASE = "panda_link0"
# Domains 101..200: the other ROS tests and the tools take 1..100 (dds.domain_id_for), so a
# demo or benchmark running meanwhile on this machine cannot answer for this test's bridge.
DOMAIN = 101 + os.getpid() % 100
SIM_T0 = 5000.0  # s: sim time far from the wall clock, so a mix of the two cannot pass


def _time(t: float) -> Time:
    return Time(sec=int(t), nanosec=int((t - int(t)) * 1e9))


class GuardArm(FakeArm):
    """FakeArm whose goal stamp, frame and position a test sets; optionally a heartbeat and a
    simulated clock (``sim_time``: every stamp, and /clock, read SIM_T0 + elapsed)."""

    def __init__(self, context, sim_time: bool = False) -> None:
        super().__init__(context)
        self.goal_offset = 0.0  # s added to the goal's stamp
        self.goal_frame = BASE
        self.goal_point = (0.5, 0.1, 0.3)
        self.heartbeat = False
        self.sim_time = sim_time
        self.state_on_wall_clock = False  # stamp joint states on the wall clock in sim time
        self._hb_pub = self.node.create_publisher(Bool, "/policy_bridge/heartbeat", 10)
        self._clock_pub = self.node.create_publisher(Clock, "/clock", 10)
        self._start = time.monotonic()

    def now(self) -> float:
        if self.sim_time:
            return SIM_T0 + time.monotonic() - self._start
        return self.node.get_clock().now().nanoseconds * 1e-9

    def _tick(self) -> None:
        now = self.now()
        if self.sim_time:
            self._clock_pub.publish(Clock(clock=_time(now)))
        if self.heartbeat:
            self._hb_pub.publish(Bool(data=True))
        goal = PointStamped()
        goal.header.stamp, goal.header.frame_id = _time(now + self.goal_offset), self.goal_frame
        goal.point.x, goal.point.y, goal.point.z = (float(v) for v in self.goal_point)
        self._goal_pub.publish(goal)
        if not self.publishing:
            return
        q = np.asarray(self.position(time.monotonic() - self._t0), dtype=np.float64)
        msg = JointState(name=self.names, position=q.tolist(), velocity=[0.0] * len(q))
        wall = self.node.get_clock().now().nanoseconds * 1e-9
        msg.header.stamp = _time(wall if self.state_on_wall_clock else now)
        self._js_pub.publish(msg)


@pytest.fixture(scope="module")
def ros_context():
    with dds.local_context(DOMAIN) as context:
        yield context


def start_bridge(policy: str, log_path, *params: str):
    args = ["--policy", policy, "--ros-args", "-p", "autostart:=true"]
    args += ["-p", f"goal_topic:={GOAL_TOPIC}", "-p", f"state_timeout:={STATE_TIMEOUT}", *params]
    return dds.start_node("serve", args, DOMAIN, log_path)


@pytest.fixture
def arm(ros_context):
    a = GuardArm(ros_context)
    yield a
    a.close()


@pytest.fixture
def sim_arm(ros_context):
    """The arm side on a simulated clock (stamps and /clock at SIM_T0 + elapsed)."""
    a = GuardArm(ros_context, sim_time=True)
    yield a
    a.close()


def _log(tmp_path) -> str:
    return (tmp_path / "bridge.log").read_text()


def _wait_active(arm: GuardArm, tmp_path, timeout: float = 60.0) -> bool:
    """Active by the bridge's own log: this module's DDS participant outlives each test's bridge,
    and the one before's services can still look ready for a while after it exited."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if "active at" in _log(tmp_path):
            arm.spin(0.5)  # (the new services' endpoints match this participant)
            return True
        arm.spin(0.2)
    return False


def _enable(arm: GuardArm, on: bool = True):
    """~/enable, retried: a request sent before the new server matched is lost."""
    for attempt in range(3):
        try:
            return arm.call(arm.enable_client, SetBool.Request(data=on), timeout=4.0)
        except AssertionError:
            if attempt == 2:
                raise


def _held(arm: GuardArm, t0: float, t1: float) -> list[np.ndarray]:
    cmds = [c for tc, c in arm.commands if t0 <= tc <= t1]
    for c in cmds:
        np.testing.assert_array_equal(c, cmds[0])
    return cmds


@pytest.fixture
def bridge(tmp_path, request):
    proc = start_bridge(POLICY, tmp_path / "bridge.log", *getattr(request, "param", ()))
    yield proc
    dds.stop_node(proc)


def test_stale_future_wrong_frame_and_jumping_goals_hold_with_a_log_line(arm, bridge, tmp_path):
    assert _wait_active(arm, tmp_path), _log(tmp_path)
    assert _enable(arm).success
    arm.spin(1.0)
    assert len(arm.commands) > 10, _log(tmp_path)
    cases = {
        "stale": ("goal_offset", -2.0, "s old on arrival"),
        "future": ("goal_offset", 2.0, "in the future"),
        "wrong frame": ("goal_frame", "camera_link", "frame_id 'camera_link'"),
        "jump": ("goal_point", (0.5, 0.6, 0.3), "moved 0.500 m"),
    }
    for name, (attr, value, logged) in cases.items():
        default = getattr(arm, attr)
        setattr(arm, attr, value)
        t_bad = time.monotonic()
        arm.spin(0.6)
        # From 0.15 s on (delivery on a loaded machine), every command is the hold command.
        held = _held(arm, t_bad + 0.15, t_bad + 0.4)
        assert len(held) >= 3, f"{name}: the bridge should keep sending its hold command"
        assert logged in _log(tmp_path), f"{name}: no log line:\n{_log(tmp_path)[-2000:]}"
        setattr(arm, attr, default)
        arm.spin(0.6)  # (the jump case: the goal comes back within the bound)
        moving = np.array(arm.commands_since(time.monotonic() - 0.3))
        assert np.ptp(moving[:, 0]) > 0.0, f"{name}: control did not resume"
    assert within_real_limits([c for _, c in arm.commands])


@pytest.mark.parametrize(
    "bridge", [("-p", "heartbeat:=required", "-p", "run_time_limit:=2.0")], indirect=True
)
def test_no_heartbeat_refuses_and_lapses_the_enable_and_the_run_time_limit_ends_it(
    arm, bridge, tmp_path
):
    assert _wait_active(arm, tmp_path), _log(tmp_path)
    response = _enable(arm)
    assert not response.success and "no heartbeat" in response.message
    arm.heartbeat = True
    arm.spin(0.3)
    assert _enable(arm).success
    arm.spin(0.8)
    assert len(arm.commands) > 5
    arm.heartbeat = False
    t_stop = time.monotonic()
    arm.spin(1.2)
    assert arm.commands_since(t_stop + 0.5 + 0.2) == [], "a lapsed enable must stop commanding"
    assert "enable lapsed: no heartbeat" in _log(tmp_path)
    # Heartbeats again: enabling works, and the run time limit (2 s) ends the run.
    arm.heartbeat = True
    arm.spin(0.3)
    assert _enable(arm).success
    t_enable = time.monotonic()
    arm.spin(3.0)
    assert arm.commands_since(t_enable + 0.5), "commands while within the run time"
    assert arm.commands_since(t_enable + 2.3) == [], "the run time limit must end the enable"
    assert "run_time_limit 2 s reached" in _log(tmp_path)


@pytest.mark.parametrize(
    "bridge",
    [("-p", "workspace_min:=[0.0, -0.9, 0.0]", "-p", "workspace_max:=[0.2, 0.9, 1.0]")],
    indirect=True,
)
def test_commands_whose_tcp_leaves_the_workspace_are_not_sent(arm, bridge, tmp_path):
    # The home TCP is about 0.31 m in front of the base: every command puts it outside the box.
    assert _wait_active(arm, tmp_path), _log(tmp_path)
    assert _enable(arm).success
    arm.spin(1.0)
    assert arm.commands == [], "no command with the TCP outside the box may go out"
    assert "outside the workspace" in _log(tmp_path)


@pytest.mark.parametrize(
    "bridge", [("-p", "use_sim_time:=true", "-p", "stamp_future_tolerance:=0.1")], indirect=True
)
def test_sim_time_ages_stamps_on_the_clock_topic(sim_arm, bridge, tmp_path):
    arm = sim_arm
    assert _wait_active(arm, tmp_path), _log(tmp_path)
    assert _enable(arm).success
    arm.spin(1.0)
    # (stamp_future_tolerance 0.1 s: a state stamped on the publisher's newest sim time may
    # arrive before that /clock message does, by up to a /clock period plus delivery.)
    # Stamps in sim time (5000 s) would all be stale against the wall clock: commands prove
    # that the ages and the control timer are on /clock.
    assert len(arm.commands) > 10, _log(tmp_path)
    assert within_real_limits([c for _, c in arm.commands])
    # A publisher on the wall clock while the bridge is on sim time: stamps 1.8e9 s "in the
    # future". The bridge holds and says so.
    arm.state_on_wall_clock = True
    t_bad = time.monotonic()
    arm.spin(0.8)
    assert len(_held(arm, t_bad + 0.15, t_bad + 0.8)) >= 3
    assert "stamped" in _log(tmp_path) and "in the future" in _log(tmp_path)


@pytest.mark.parametrize(
    "bridge",
    [("-p", "use_sim_time:=true", "-p", "stamp_future_tolerance:=0.1", "-p", "output:=trajectory")],
    indirect=True,
)
def test_sim_time_reaches_the_trajectory_stamps(sim_arm, bridge, tmp_path):
    """With use_sim_time the plans are timed on /clock: each JointTrajectory is stamped at the
    sim time it was planned (SIM_T0 + elapsed), not at a wall-clock instant shifted by an
    offset measured once (1.8e9 s away)."""
    arm = sim_arm
    assert _wait_active(arm, tmp_path), _log(tmp_path)
    assert _enable(arm).success
    arm.spin(1.5)
    assert len(arm.trajectories) > 10, _log(tmp_path)
    assert all(m.points and len(m.points[0].velocities) == 7 for _, m in arm.trajectories)
    stamps = [stamp_seconds(m.header.stamp) for _, m in arm.trajectories]
    # arm.now() at the end bounds every stamp from above; /clock is published at 250 Hz, so a
    # plan's sim time trails the publisher's by a few ms at most.
    lags = [arm.now() - t for t in stamps]
    assert min(lags) > 0.0 and max(lags) < 2.0, (min(lags), max(lags))
    # After the start plan (a rest at the measured position, sent unchanged for its 0.2 s:
    # MotionLimits.start_time), plans one control period apart on /clock (25 Hz).
    gaps = np.diff(stamps)
    assert (gaps >= 0).all(), stamps
    moving = gaps[gaps > 0][1:]  # (the first: from the start plan's stamp)
    assert len(moving) > 10 and 0.03 < float(np.median(moving)) < 0.05, gaps


def test_the_gripper_topic_gets_open_close_on_change_and_a_slow_keepalive(arm, tmp_path):
    from geometry_msgs.msg import PoseStamped
    from std_msgs.msg import Float64MultiArray

    gripper: list[tuple[float, list[float]]] = []
    arm.node.create_subscription(
        Float64MultiArray,
        "/gripper_controller/commands",
        lambda m: gripper.append((time.monotonic(), list(m.data))),
        10,
    )
    pose_pub = arm.node.create_publisher(PoseStamped, "/test_arm/object_pose", 10)

    def publish_pose() -> None:
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = _time(arm.now()), BASE
        pose.pose.position.x, pose.pose.position.z = 0.5, 0.025
        pose.pose.orientation.w = 1.0
        pose_pub.publish(pose)

    arm.node.create_timer(0.02, publish_pose)
    params = ["-p", "object_pose_topic:=/test_arm/object_pose", "-p", "gripper_backend:=topic"]
    params += ["-p", "gripper_mode:=discrete", "-p", "gripper_keepalive:=1.0"]
    policy = str(dds.PRETRAINED_DIR / "panda_pick_place.pt")
    proc = start_bridge(policy, tmp_path / "bridge.log", *params)
    try:
        assert _wait_active(arm, tmp_path), _log(tmp_path)
        assert _enable(arm).success
        arm.spin(3.0)
    finally:
        dds.stop_node(proc)
    assert len(arm.commands) > 40, _log(tmp_path)  # the arm at 25 Hz
    widths = [sum(g) for _, g in gripper]
    assert gripper, "the gripper's state must be sent"
    assert set(np.round(widths, 6)) <= {0.0, 0.08}, f"open/close widths only, got {widths}"
    changes = sum(a != b for a, b in zip(widths, widths[1:], strict=False))
    # One message per change of state plus a keepalive a second: nothing like 25 Hz.
    assert len(gripper) <= changes + 1 + 4, f"{len(gripper)} gripper messages in 3 s"
