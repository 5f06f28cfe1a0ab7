"""policy_bridge over real DDS: the bridge runs in its own process (``manip-rl serve``) and this
test process plays the arm (publishes /joint_states and the goal, records the commands), all on
localhost in a ROS domain of this test run's own.

The policy files are real exports (an SB3 PPO model, untrained, through ``manip_rl.export``):
the safety layers must hold whatever the policy outputs. ``test_episode_solved_through_ros``
serves a trained policy to the simulated arm.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from manip_rl import policy_io  # noqa: E402
from manip_rl.policy_io import PANDA_FINGER_JOINT_NAMES, PANDA_JOINT_NAMES  # noqa: E402
from manip_rl.robots import PANDA  # noqa: E402
from manip_rl.ros_bridge import dds  # noqa: E402

pytestmark = pytest.mark.ros

DOMAIN = dds.domain_id_for()
GOAL_TOPIC = "/test_arm/goal"
COMMAND_TOPIC = "/forward_position_controller/commands"
STATE_TIMEOUT = 0.1


@pytest.fixture(scope="module")
def reach_policy(tmp_path_factory) -> str:
    """A real exported PandaReach policy file (untrained PPO)."""
    import gymnasium as gym
    from stable_baselines3 import PPO

    import manip_rl  # noqa: F401
    from manip_rl.export import export_policy

    path = tmp_path_factory.mktemp("policy") / "reach.pt"
    env = gym.make("manip_rl/PandaReach-v0")
    model = PPO("MultiInputPolicy", env, n_steps=64, seed=0, device="cpu")
    export_policy(model, path, env_id="manip_rl/PandaReach-v0")
    return str(path)


@pytest.fixture(scope="module")
def ros_context():
    """rclpy in this process on the test's DDS domain, localhost only."""
    with dds.local_context(DOMAIN) as context:
        yield context


class FakeArm:
    """The arm side, in this process: publishes joint states (with the contents a test sets) and
    the goal, records every command with its arrival time."""

    def __init__(self, context, names=None, rate: float = 250.0) -> None:
        from geometry_msgs.msg import PointStamped
        from rclpy.executors import SingleThreadedExecutor

        self.node = rclpy.create_node(f"test_arm_{os.getpid()}", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.names = list(names or (*PANDA_JOINT_NAMES, *PANDA_FINGER_JOINT_NAMES))
        self.position = lambda t: np.concatenate(
            [policy_io.PANDA_HOME + [0.2 * math.sin(2.0 * t), 0, 0, 0, 0, 0, 0], [0.04, 0.04]]
        )
        self.publishing = True
        self.commands: list[tuple[float, np.ndarray]] = []
        self.trajectories: list[tuple[float, JointTrajectory]] = []
        self.diagnostics: list[dict[str, str]] = []
        self._t0 = time.monotonic()
        self._js_pub = self.node.create_publisher(JointState, "/joint_states", 10)
        self._goal_pub = self.node.create_publisher(PointStamped, GOAL_TOPIC, 10)
        self._goal = PointStamped()
        self._goal.point.x, self._goal.point.y, self._goal.point.z = 0.5, 0.1, 0.3
        self.node.create_subscription(Float64MultiArray, COMMAND_TOPIC, self._on_command, 10)
        self.node.create_subscription(
            JointTrajectory,
            "/joint_trajectory_controller/joint_trajectory",
            lambda m: self.trajectories.append((time.monotonic(), m)),
            10,
        )
        self.node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: self.diagnostics.extend(
                {kv.key: kv.value for kv in st.values} for st in m.status
            ),
            10,
        )
        self.node.create_timer(1.0 / rate, self._tick)
        self.enable_client = self.node.create_client(SetBool, "/policy_bridge/enable")
        self.state_client = self.node.create_client(GetState, "/policy_bridge/get_state")

    def _tick(self) -> None:
        # The goal as perception publishes it: stamped now, in the base frame (the bridge
        # refuses an old, unstamped or other-frame goal).
        self._goal.header.stamp = self.node.get_clock().now().to_msg()
        self._goal.header.frame_id = "panda_link0"
        self._goal_pub.publish(self._goal)
        if not self.publishing:
            return
        q = np.asarray(self.position(time.monotonic() - self._t0), dtype=np.float64)
        msg = JointState(name=self.names, position=q.tolist(), velocity=[0.0] * len(q))
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self._js_pub.publish(msg)

    def _on_command(self, msg: Float64MultiArray) -> None:
        self.commands.append((time.monotonic(), np.array(msg.data)))

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.005)

    def call(self, client, request, timeout: float = 10.0):
        if not client.wait_for_service(timeout_sec=timeout):
            raise AssertionError(f"service {client.srv_name} did not appear within {timeout} s")
        future = client.call_async(request)
        end = time.monotonic() + timeout
        while not future.done() and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)
        assert future.done(), f"service {client.srv_name} did not answer"
        return future.result()

    def lifecycle_state(self) -> str:
        return self.call(self.state_client, GetState.Request()).current_state.label

    def wait_active(self, timeout: float = 40.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.state_client.service_is_ready():
                # A bridge still configuring (autostart: before it spins), or the previous test's
                # bridge still in this participant's discovery data, answers nothing: ask again.
                try:
                    state = self.call(self.state_client, GetState.Request(), timeout=5.0)
                except AssertionError:
                    continue
                if state.current_state.label == "active":
                    return True
            self.spin(0.2)
        return False

    def enable(self, on: bool = True) -> SetBool.Response:
        return self.call(self.enable_client, SetBool.Request(data=on))

    def commands_since(self, t: float) -> list[np.ndarray]:
        return [c for (tc, c) in self.commands if tc >= t]

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def start_bridge(policy: str, log_path, *params: str, autostart: bool = True):
    args = [
        "--policy", policy, "--ros-args", "-p", f"autostart:={str(autostart).lower()}",
        "-p", f"goal_topic:={GOAL_TOPIC}",
        "-p", f"state_timeout:={STATE_TIMEOUT}",
        *params,
    ]  # fmt: skip
    return dds.start_node("serve", args, DOMAIN, log_path)


@pytest.fixture
def arm(ros_context):
    a = FakeArm(ros_context)
    yield a
    a.close()


@pytest.fixture
def bridge(reach_policy, tmp_path, request):
    params = getattr(request, "param", ())
    proc = start_bridge(reach_policy, tmp_path / "bridge.log", *params)
    yield proc
    dds.stop_node(proc)


def _log(tmp_path) -> str:
    return (tmp_path / "bridge.log").read_text()


def test_disabled_sends_nothing_then_commands_arrive_at_the_control_rate(arm, bridge, tmp_path):
    assert arm.wait_active(), f"bridge never became active:\n{_log(tmp_path)}"
    t = time.monotonic()
    arm.spin(1.0)
    assert arm.commands_since(t) == [], "a disabled bridge must not command"
    assert arm.enable().success
    t_enable = time.monotonic()
    arm.spin(2.5)
    stamps = [tc for tc, _ in arm.commands if tc >= t_enable + 0.3]
    intervals = np.diff(stamps)
    assert len(stamps) >= 40, f"{len(stamps)} commands in 2.2 s at 25 Hz:\n{_log(tmp_path)}"
    assert abs(np.median(intervals) - 0.04) < 0.004, f"median period {np.median(intervals)}"
    assert all(np.isfinite(c).all() and c.shape == (7,) for c in arm.commands_since(t_enable))
    # /diagnostics reports the loop: rate, latency, inference time, state age.
    diag = [d for d in arm.diagnostics if d.get("enabled") == "True" and "loop_rate_hz" in d]
    assert diag, f"no /diagnostics from an enabled bridge: {arm.diagnostics[-1:]}"
    assert abs(float(diag[-1]["loop_rate_hz"]) - 25.0) < 2.5
    for key in ("latency_p50_ms", "latency_p99_ms", "inference_p50_ms", "state_age_ms"):
        assert float(diag[-1][key]) >= 0.0, key
    assert arm.enable(False).success
    t_off = time.monotonic()
    arm.spin(1.0)
    assert arm.commands_since(t_off + 0.1) == [], "commands continued after disable"


def test_stale_joint_states_make_the_bridge_hold(arm, bridge, tmp_path):
    assert arm.wait_active(), _log(tmp_path)
    assert arm.enable().success
    arm.spin(1.5)
    moving = [c for c in arm.commands_since(time.monotonic() - 1.0)]
    assert np.ptp(np.array(moving)[:, 0]) > 0.02, "commands should follow the moving arm"
    arm.publishing = False
    t_stop = time.monotonic()
    arm.spin(1.5)
    # Within the timeout (plus delivery slack on a loaded machine) every command is the same hold command.
    held = arm.commands_since(t_stop + STATE_TIMEOUT + 0.15)
    assert len(held) >= 20, "the bridge should keep the controller fed with the hold command"
    for c in held:
        np.testing.assert_array_equal(c, held[0])
    before = arm.commands_since(t_stop - 0.2)
    assert any(np.array_equal(c, held[0]) for c in before), "hold must repeat the last command"
    # State returns: control resumes.
    arm.publishing = True
    t_back = time.monotonic()
    arm.spin(1.0)
    resumed = np.array(arm.commands_since(t_back + 0.2))
    assert np.ptp(resumed[:, 0]) > 0.005, "control did not resume on fresh state"


def test_nan_in_joint_state_builds_no_command(arm, bridge, tmp_path):
    assert arm.wait_active(), _log(tmp_path)
    assert arm.enable().success
    arm.spin(1.0)
    good = arm.position
    arm.position = lambda t: np.where(np.arange(9) == 2, np.nan, good(t))
    t_nan = time.monotonic()
    arm.spin(1.5)
    # (0.3 s: states already in flight when the NaN began may still be used, on a loaded machine)
    during = arm.commands_since(t_nan + 0.3)
    assert during, "the bridge should hold (repeat the last command), not go silent"
    assert all(np.isfinite(c).all() for _, c in arm.commands)
    for c in during:
        np.testing.assert_array_equal(c, during[0])
    # The held command is one built before the NaN states: a repeat, nothing new.
    before = [c for tc, c in arm.commands if tc < t_nan + 0.3]
    assert any(np.array_equal(c, during[0]) for c in before)
    assert "joint state with NaN/inf ignored" in _log(tmp_path)


@pytest.mark.parametrize("bridge", [("-p", "joint_limit_margin:=0.1")], indirect=True)
def test_out_of_limit_targets_are_clamped(arm, bridge, tmp_path):
    upper = policy_io.PANDA_JOINT_UPPER
    # 0.04 rad past the policy's limits (within the plausibility tolerance of the datasheet's).
    arm.position = lambda t: np.concatenate([upper + 0.04, [0.04, 0.04]])
    assert arm.wait_active(), _log(tmp_path)
    assert arm.enable().success
    t = time.monotonic()
    arm.spin(1.5)
    cmds = np.array(arm.commands_since(t))
    assert len(cmds) > 20, _log(tmp_path)
    assert (cmds <= upper - 0.1 + 1e-9).all(), f"max excess {np.max(cmds - (upper - 0.1))}"
    # The clamp holds them at the (tightened) limit, not somewhere arbitrary.
    np.testing.assert_allclose(cmds[-1], upper - 0.1, atol=1e-9)


def test_refuses_to_activate_and_says_why(ros_context, reach_policy, tmp_path):
    names, reason = [f"fr3_joint{i}" for i in range(1, 8)], "does not cover the policy's joints"
    arm = FakeArm(ros_context, names=names)
    arm.position = lambda t: policy_io.PANDA_HOME
    proc = start_bridge(reach_policy, tmp_path / "bridge.log")
    try:
        end = time.monotonic() + 40
        while reason not in _log(tmp_path) and time.monotonic() < end:
            arm.spin(0.2)
        log = _log(tmp_path)
        assert "refusing to activate" in log and reason in log, log
        assert "panda_joint1" in log  # names what is missing
        arm.spin(1.0)
        assert arm.lifecycle_state() == "inactive"
        response = arm.enable()
        assert not response.success and "not active" in response.message
        arm.spin(0.5)
        assert arm.commands == []
    finally:
        dds.stop_node(proc)
        arm.close()


@pytest.mark.parametrize("bridge", [("-p", "output:=trajectory")], indirect=True)
def test_trajectory_output_names_the_joints(arm, bridge, tmp_path):
    arm.names = list(reversed(arm.names))  # the bridge must not care about the order
    forward = arm.position
    arm.position = lambda t: forward(t)[::-1]
    assert arm.wait_active(), _log(tmp_path)
    assert arm.enable().success
    t = time.monotonic()
    arm.spin(1.5)
    trajs = [m for tc, m in arm.trajectories if tc >= t + 0.3]
    assert len(trajs) >= 20, _log(tmp_path)
    assert arm.commands == [], "output: trajectory must not publish forward commands"
    for m in trajs:
        assert list(m.joint_names) == list(PANDA_JOINT_NAMES)
        # A plan within the motion limits: stamped, positions and velocities, ending at rest.
        assert m.header.stamp.sec > 0
        assert all(len(p.velocities) == 7 for p in m.points)
        assert np.allclose(m.points[-1].velocities, 0.0)
        tfs = m.points[0].time_from_start
        assert tfs.sec == 0 and 0 < tfs.nanosec <= 200_000_000  # within the start plan's 0.2 s
        q = np.array(m.points[0].positions)
        # Targets stay near the (by-name) measured joints: joint 4 near -2.36, not a finger.
        assert np.all(np.abs(q - policy_io.PANDA_HOME) < 0.5), q


def test_lifecycle_transitions_driven_over_ros(arm, reach_policy, tmp_path):
    """configure -> activate -> (enable: commands) -> deactivate (no commands) -> cleanup."""
    proc = start_bridge(reach_policy, tmp_path / "bridge.log", autostart=False)
    client = arm.node.create_client(ChangeState, "/policy_bridge/change_state")

    def transition(tid: int) -> bool:
        return arm.call(client, ChangeState.Request(transition=Transition(id=tid)), 30.0).success

    try:
        assert client.wait_for_service(timeout_sec=40.0), _log(tmp_path)
        assert arm.lifecycle_state() == "unconfigured"
        assert transition(Transition.TRANSITION_CONFIGURE), _log(tmp_path)
        assert arm.lifecycle_state() == "inactive"
        arm.spin(0.3)
        assert transition(Transition.TRANSITION_ACTIVATE), _log(tmp_path)
        assert arm.enable().success
        t = time.monotonic()
        arm.spin(1.0)
        assert len(arm.commands_since(t)) >= 15
        assert transition(Transition.TRANSITION_DEACTIVATE)
        t_off = time.monotonic()
        arm.spin(1.0)
        assert arm.commands_since(t_off + 0.1) == [], "a deactivated bridge must not command"
        assert not arm.enable().success
        assert transition(Transition.TRANSITION_CLEANUP)
        assert arm.lifecycle_state() == "unconfigured"
        assert "cleaned up: policy released" in _log(tmp_path)
    finally:
        dds.stop_node(proc)


def test_a_rate_other_than_the_policys_fails_configure_and_serve_exits(
    ros_context, reach_policy, tmp_path
):
    """The rate limit is per control period, so the bridge's period must be the policy's: a
    disagreeing control_rate fails configure, and `serve --autostart` exits non-zero saying why
    (issue #20 item 7: it used to stay up, unconfigured and silent)."""
    arm = FakeArm(ros_context)
    proc = start_bridge(reach_policy, tmp_path / "bridge.log", "-p", "control_rate:=100.0")
    try:
        code = proc.wait(60)
        log = _log(tmp_path)
        assert code != 0, log
        assert "configure failed" in log and "control_period_s" in log and "100" in log, log
        assert "Traceback" not in log, log
        arm.spin(0.3)
        assert arm.commands == []
    finally:
        dds.stop_node(proc)
        arm.close()


def test_sigterm_stops_an_active_bridge_cleanly(arm, reach_policy, tmp_path):
    """Issue #20 item 7: SIGTERM to an active `serve` printed an RCLError traceback."""
    import signal

    proc = start_bridge(reach_policy, tmp_path / "bridge.log")
    try:
        assert arm.wait_active(), _log(tmp_path)
        assert arm.enable().success
        arm.spin(0.5)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, _log(tmp_path)
        assert "Traceback" not in _log(tmp_path) and "RCLError" not in _log(tmp_path)
    finally:
        dds.stop_node(proc)


REAL_LOWER = np.maximum(policy_io.PANDA_JOINT_LOWER, PANDA.lower)  # the policy's and the robot's
REAL_UPPER = np.minimum(policy_io.PANDA_JOINT_UPPER, PANDA.upper)
# launch/config/sim.yaml (the default parameter file): 6 rad/s x 40 ms, ramped in over 0.2 s.
FIRST_STEP_ALLOWANCE = 6.0 * 0.04 / 5


def within_real_limits(commands) -> bool:
    c = np.array(commands)
    return bool(((c >= REAL_LOWER - 1e-9) & (c <= REAL_UPPER + 1e-9)).all())


def test_an_implausible_reading_at_enable_never_becomes_a_jump(arm, bridge, tmp_path):
    """Issue #20 item 1: with 1e6 rad on joint 1 at the moment of enable, the first command landed
    0.6-2.1 rad from the arm's last plausible position (the ramp-in allows 0.048 rad)."""
    home = np.concatenate([policy_io.PANDA_HOME, [0.04, 0.04]])
    bad = home.copy()
    bad[0] = 1e6
    arm.position = lambda t: home
    assert arm.wait_active(), _log(tmp_path)
    arm.position = lambda t: bad  # while disabled: enable is refused, with the reason
    arm.spin(0.3)
    response = arm.enable()
    assert not response.success, "enable must be refused while the joint state is implausible"
    assert "hold_state_outside_limits" in response.message and "panda_joint1" in response.message
    arm.spin(0.3)
    assert arm.commands == []
    # Plausible again: enable; the implausible reading arrives right after.
    arm.position = lambda t: home
    arm.spin(0.3)
    assert arm.enable().success, _log(tmp_path)
    arm.position = lambda t: bad
    arm.spin(1.3)
    arm.position = lambda t: home
    arm.spin(1.0)
    cmds = [c for _, c in arm.commands]
    assert len(cmds) > 10, _log(tmp_path)
    assert within_real_limits(cmds), f"max {np.max(cmds, axis=0)}"
    jump = np.max(np.abs(cmds[0] - policy_io.PANDA_HOME))
    assert jump <= FIRST_STEP_ALLOWANCE + 1e-9, f"first command {jump:.4f} rad from the arm"
    steps = np.max(np.abs(np.diff(np.array(cmds), axis=0)), axis=1)
    assert steps.max() <= 6.0 * 0.04 + 1e-9
    assert "joint state rejected (hold_state_outside_limits)" in _log(tmp_path)
    problems = [d["state_problem"] for d in arm.diagnostics if "state_problem" in d]
    assert problems and "panda_joint1" in problems[0], arm.diagnostics[-3:]


def test_duplicate_joint_names_make_the_bridge_hold(arm, bridge, tmp_path):
    """Issue #20 item 1: a JointState naming panda_joint1 twice (last value wins) was used."""
    assert arm.wait_active(), _log(tmp_path)
    assert arm.enable().success
    arm.spin(1.0)
    good = arm.position
    arm.names = [*arm.names, "panda_joint1"]
    arm.position = lambda t: np.concatenate([good(t), [2.0]])
    t_dup = time.monotonic()
    arm.spin(1.5)
    during = arm.commands_since(t_dup + 0.3)
    assert during, "the bridge should hold (repeat the last command), not go silent"
    for c in during:
        np.testing.assert_array_equal(c, during[0])
    assert any(np.array_equal(c, during[0]) for c in arm.commands_since(0)[: -len(during)])
    assert "hold_duplicate_joint_names" in _log(tmp_path)
    assert arm.enable(False).success
    response = arm.enable()
    assert not response.success and "panda_joint1" in response.message
    assert within_real_limits([c for _, c in arm.commands])
