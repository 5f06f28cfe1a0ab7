"""sim_arm over real DDS: it runs in its own process (``manip-rl sim-arm``) and this test process
plays the controller side: joint states arrive by name at the configured rate, forward-position
and joint-trajectory commands move the simulated arm, bad commands are rejected, ``~/reset``
starts a new episode, and sensor latency delays what the arm reports."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Duration  # noqa: E402
from geometry_msgs.msg import PointStamped  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool, Float64MultiArray  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from manip_rl import policy_io  # noqa: E402
from manip_rl.policy_io import PANDA_FINGER_JOINT_NAMES, PANDA_JOINT_NAMES  # noqa: E402
from manip_rl.ros_bridge import dds  # noqa: E402

pytestmark = pytest.mark.ros

DOMAIN = dds.domain_id_for(os.getpid() + 37)


@pytest.fixture(scope="module")
def context():
    with dds.local_context(DOMAIN) as ctx:
        yield ctx


class Controller:
    def __init__(self, context) -> None:
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        self.node = rclpy.create_node(f"test_controller_{os.getpid()}", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self.states: list[tuple[float, JointState]] = []
        self.goal: np.ndarray | None = None
        self.success: bool | None = None
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.node.create_subscription(JointState, "/joint_states", self._on_state, qos)
        self.node.create_subscription(PointStamped, "/sim_arm/goal", self._on_goal, 10)
        self.node.create_subscription(Bool, "/sim_arm/success", self._on_success, 10)
        self.cmd = self.node.create_publisher(
            Float64MultiArray, "/forward_position_controller/commands", 10
        )
        self.traj = self.node.create_publisher(
            JointTrajectory, "/joint_trajectory_controller/joint_trajectory", 10
        )
        self.reset = self.node.create_client(Trigger, "/sim_arm/reset")

    def _on_state(self, msg: JointState) -> None:
        self.states.append((time.monotonic(), msg))

    def _on_goal(self, msg: PointStamped) -> None:
        self.goal = np.array([msg.point.x, msg.point.y, msg.point.z])

    def _on_success(self, msg: Bool) -> None:
        self.success = msg.data

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.005)

    def wait_states(self, timeout: float = 40.0) -> None:
        end = time.monotonic() + timeout
        while not self.states and time.monotonic() < end:
            self.spin(0.1)
        assert self.states, "sim_arm published no joint states"

    def arm_position(self) -> np.ndarray:
        msg = self.states[-1][1]
        where = {n: i for i, n in enumerate(msg.name)}
        return np.array([msg.position[where[n]] for n in PANDA_JOINT_NAMES])

    def call_reset(self) -> Trigger.Response:
        assert self.reset.wait_for_service(timeout_sec=10.0)
        future = self.reset.call_async(Trigger.Request())
        end = time.monotonic() + 10
        while not future.done() and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)
        return future.result()

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def start_sim(tmp_path, *params: str):
    args = ["--ros-args", "-p", "randomization:=none", "-p", "actuator_latency:=0.0", *params]
    return dds.start_node("sim-arm", args, DOMAIN, tmp_path / "sim_arm.log")


@pytest.fixture
def controller(context):
    c = Controller(context)
    yield c
    c.close()


def test_sim_arm_states_commands_and_reset(controller, tmp_path):
    proc = start_sim(tmp_path, "-p", "sensor_latency:=0.0")
    try:
        c = controller
        c.wait_states()
        c.states.clear()
        c.spin(1.0)
        stamps = np.array([t for t, _ in c.states])
        assert len(stamps) > 250, f"{len(stamps)} joint states in 1 s (500 Hz configured)"
        msg = c.states[-1][1]
        assert list(msg.name) == [*PANDA_JOINT_NAMES, *PANDA_FINGER_JOINT_NAMES]
        assert len(msg.velocity) == 9
        home = c.arm_position()
        np.testing.assert_allclose(home, policy_io.PANDA_HOME, atol=0.06)  # reset: home +-0.05
        assert c.goal is not None and c.success is not None

        # Forward position command: the arm goes there.
        target = home + np.array([0.3, 0.0, 0.0, 0.0, 0.0, 0.2, 0.0])
        c.cmd.publish(Float64MultiArray(data=target.tolist()))
        c.spin(1.5)
        np.testing.assert_allclose(c.arm_position(), target, atol=0.03)

        # Joint trajectory, joints in reverse order: matched by name, not by index.
        target2 = home + np.array([-0.2, 0.1, 0.0, 0.1, 0.0, 0.0, 0.3])
        names = list(reversed(PANDA_JOINT_NAMES))
        point = JointTrajectoryPoint(
            positions=[float(target2[PANDA_JOINT_NAMES.index(n)]) for n in names],
            time_from_start=Duration(sec=0, nanosec=300_000_000),
        )
        c.traj.publish(JointTrajectory(joint_names=names, points=[point]))
        c.spin(1.5)
        np.testing.assert_allclose(c.arm_position(), target2, atol=0.03)

        # Out of the joint limits (joint 4 above -0.4 rad) or NaN: rejected, the arm stays.
        bad = target2.copy()
        bad[3] = 0.5
        c.cmd.publish(Float64MultiArray(data=bad.tolist()))
        nan = target2.copy()
        nan[0] = float("nan")
        c.cmd.publish(Float64MultiArray(data=nan.tolist()))
        c.spin(0.7)
        np.testing.assert_allclose(c.arm_position(), target2, atol=0.03)
        assert "outside the joint limits" in (tmp_path / "sim_arm.log").read_text()

        # Reset: a new goal, the arm back near home.
        old_goal = c.goal.copy()
        response = c.call_reset()
        assert response.success and "episode 2" in response.message
        c.spin(0.5)
        assert not np.allclose(c.goal, old_goal)
        np.testing.assert_allclose(c.arm_position(), policy_io.PANDA_HOME, atol=0.06)
    finally:
        dds.stop_node(proc)


def test_sensor_latency_delays_the_reported_motion(controller, tmp_path):
    latency = 0.15
    proc = start_sim(tmp_path, "-p", f"sensor_latency:={latency}")
    try:
        c = controller
        c.wait_states()
        c.spin(0.5)
        home = c.arm_position()
        target = home + np.array([0.4, 0, 0, 0, 0, 0, 0])
        t_cmd = time.monotonic()
        c.cmd.publish(Float64MultiArray(data=target.tolist()))
        c.spin(1.0)
        moved = [t for t, msg in c.states if t > t_cmd and abs(msg.position[0] - home[0]) > 0.01]
        assert moved, "the arm never reported moving"
        delay = moved[0] - t_cmd
        # The arm needs a few ms to move 0.01 rad; the report comes at least `latency` later.
        assert delay >= latency, f"motion reported {delay * 1e3:.0f} ms after the command"
        assert delay < latency + 0.25
    finally:
        dds.stop_node(proc)


def _point(q, sec: int = 0, nanosec: int = 300_000_000) -> JointTrajectoryPoint:
    return JointTrajectoryPoint(
        positions=[float(x) for x in q], time_from_start=Duration(sec=sec, nanosec=nanosec)
    )


def test_bad_trajectories_and_commands_are_logged_and_ignored(controller, tmp_path):
    """Issue #20 item 5: a point with fewer positions than names killed sim_arm (IndexError);
    negative time_from_start and duplicate names were accepted; a NaN command went unlogged."""
    proc = start_sim(tmp_path, "-p", "sensor_latency:=0.0")
    log = tmp_path / "sim_arm.log"
    try:
        c = controller
        c.wait_states()
        c.spin(0.5)
        home = c.arm_position()
        names = list(PANDA_JOINT_NAMES)
        far = home + np.array([0.4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        dup_names = [*names[:6], "panda_joint1"]
        bad = {
            "short point": JointTrajectory(joint_names=names, points=[_point(far[:3])]),
            "negative time": JointTrajectory(joint_names=names, points=[_point(far, sec=-1)]),
            "duplicate names": JointTrajectory(joint_names=dup_names, points=[_point(far)]),
            "decreasing times": JointTrajectory(
                joint_names=names, points=[_point(far, 0, 500_000_000), _point(far, 0, 100)]
            ),
            "nan": JointTrajectory(joint_names=names, points=[_point(far * np.nan)]),
        }
        # (The NaN command first: the rejection of a NaN trajectory shares its log throttle.)
        c.cmd.publish(Float64MultiArray(data=(home * np.nan).tolist()))
        c.spin(0.2)
        for msg in bad.values():
            c.traj.publish(msg)
            c.spin(0.2)
        c.spin(0.5)
        assert proc.poll() is None, f"sim_arm died:\n{log.read_text()}"
        np.testing.assert_allclose(c.arm_position(), home, atol=0.03)  # nothing was applied
        text = log.read_text()
        assert "Traceback" not in text, text
        assert "point 0 has 3 positions for 7 joint names" in text, text
        assert "time_from_start -0.7 s" in text, text
        assert "['panda_joint1'] appear more than once" in text, text
        assert "point 1 has time_from_start" in text, text
        assert "forward position command: non-finite (NaN/inf) command rejected" in text, text
        # A good trajectory after all that still moves the arm.
        c.traj.publish(JointTrajectory(joint_names=names, points=[_point(far)]))
        c.spin(1.5)
        np.testing.assert_allclose(c.arm_position(), far, atol=0.03)
    finally:
        dds.stop_node(proc)


def test_env_sensing_api_is_the_step_measurement():
    """Issue #15 item 3: sim_arm reads the env's sensors (``read_sensors``) and success test
    (``is_success``). Without randomization the reading is the state the step observes; with the
    shipped Push randomization it carries the config's per-step noise and the episode's bias."""
    import gymnasium as gym

    import manip_rl  # noqa: F401

    env = gym.make("manip_rl/PandaPush-v0", randomization="none")
    obs, info = env.reset(seed=3)
    u = env.unwrapped
    reading = u.read_sensors()
    assert [name for name, _ in policy_io.SENSOR_FIELDS] == list(reading)
    np.testing.assert_allclose(reading["object_pos"], u.object_position)
    np.testing.assert_allclose(reading["ee_pos"], u.ee_position)
    for _ in range(3):
        obs, _, _, _, info = env.step(env.action_space.sample())
        assert u.is_success() == bool(info["is_success"])
        # The observation is built from this reading (no latency without randomization).
        r = u.read_sensors()
        vector = np.concatenate([r[name] for name, _ in policy_io.SENSOR_FIELDS])
        rebuilt = policy_io.ObservationBuilder(u.layout)(vector, u.goal, u._prev_action)
        np.testing.assert_array_equal(rebuilt["observation"], obs["observation"])
    env.close()

    env = gym.make("manip_rl/PandaPush-v0", randomization="default")
    env.reset(seed=3)
    u = env.unwrapped
    cfg, bias = u.randomization_config, u.randomization_sample.observation_bias
    rng = np.random.default_rng(0)
    truth = {"joint_pos": u.data.qpos[u.ids.arm_qpos] + policy_io.SIM_JOINT_OFFSETS}
    o = u.ids.object_qpos
    truth["object_pos"], truth["object_quat"] = u.object_position, u.data.qpos[o + 3 : o + 7]
    draws = [u.read_sensors(rng) for _ in range(2000)]
    for name, true in truth.items():
        err = np.array([d[name] for d in draws]) - true
        np.testing.assert_allclose(err.std(axis=0), cfg.observation_noise[name], rtol=0.1)
        np.testing.assert_allclose(err.mean(axis=0), bias.get(name, 0.0), atol=1e-3)
    env.close()


def test_sim_arm_publishes_the_envs_noisy_reading(controller, tmp_path):
    """With the shipped Push randomization sim_arm publishes the env's reading: the fingers
    read half the (noisy) opening each, and the resting cube's pose carries the env's per-step
    quaternion noise (sim_arm's own copy of the sensing had neither)."""
    from geometry_msgs.msg import PoseStamped
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    poses: list[np.ndarray] = []
    controller.node.create_subscription(
        PoseStamped,
        "/sim_arm/object_pose",
        lambda m: poses.append(
            np.array([m.pose.orientation.w, m.pose.orientation.x, m.pose.orientation.y])
        ),
        QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT),
    )
    args = ["--env-id", "manip_rl/PandaPush-v0", "--ros-args", "-p", "randomization:=default"]
    proc = dds.start_node("sim-arm", args, DOMAIN, tmp_path / "sim_arm.log")
    try:
        c = controller
        c.wait_states()
        c.spin(1.0)
        fingers = np.array([m.position[7:9] for _, m in c.states])
        np.testing.assert_array_equal(fingers[:, 0], fingers[:, 1])
        assert np.ptp(fingers[:, 0]) > 1e-4, "the gripper reading carries no noise"
        assert len(poses) > 20, f"{len(poses)} object poses in 1 s"
        q = np.array(poses)
        # Push's observation_noise: object_quat 0.01 per component.
        assert 0.005 < q.std(axis=0).mean() < 0.02, q.std(axis=0)
    finally:
        dds.stop_node(proc)
