"""``sim_arm``: the simulated Franka Panda as a ROS 2 node, speaking the topics of a real arm under
ros2_control.

It runs the task's MuJoCo scene (the environments' own scene, goal and object sampling and
domain randomization: the node drives ``gym.make(env_id, randomization=...)``'s model) in real
time, one physics step per model timestep of wall time, and

* publishes ``/joint_states`` (``sensor_msgs/JointState``, default 500 Hz, robot convention,
  joints ``panda_joint1..7`` and ``panda_finger_joint1/2``): the env's own sensor reading
  (:meth:`~manip_rl.envs.base.PandaEnv.read_sensors`: the randomization's sensor noise and
  per-episode bias) after a sensor latency (``sensor_latency``, s); each finger reads half the
  measured gripper opening, as the Franka Hand reports its one width;
* publishes ``~/goal`` (``geometry_msgs/PointStamped``), ``~/object_pose``
  (``geometry_msgs/PoseStamped``, tasks with a cube: the same reading's object pose) and
  ``~/success`` (``std_msgs/Bool``: the env's success test,
  :meth:`~manip_rl.envs.base.PandaEnv.is_success`, on the true state, its history advanced
  once per control period);
* accepts ``std_msgs/Float64MultiArray`` on ``/forward_position_controller/commands`` (7 joint
  positions in ``joints`` order, as ros2_control's forward position controller),
  ``trajectory_msgs/JointTrajectory`` on ``/joint_trajectory_controller/joint_trajectory``
  (joints matched by name; interpolated at 1 kHz as a joint_trajectory_controller does:
  linearly between points of positions only, by cubic splines between points with velocities,
  times from the header stamp, or from the arrival when it is zero) and
  ``Float64MultiArray`` finger positions on ``/gripper_controller/commands``, each applied
  ``actuator_latency`` s after it arrives; commands outside the joint limits or non-finite are
  rejected and logged (at most every 2 s per kind), and so are trajectories whose joint names
  repeat or lack an arm joint, with no points, a point whose positions do not match the names, or
  a negative, non-finite or decreasing ``time_from_start``;
* ``~/reset`` (``std_srvs/Trigger``) starts a new episode: new goal, new object pose, new
  randomization draw.

``robot: fr3`` makes it speak franka_ros2's interfaces: joints ``fr3_joint1..7`` and
``fr3_finger_joint1/2`` on ``/joint_states`` (arm and gripper merged, as franka_ros2's
joint_state_publisher does), the arm alone at a higher rate on ``/franka/joint_states`` (its
joint_state_broadcaster; ``arm_state_topic``, ``arm_state_rate``), trajectories on
``/fr3_arm_controller/joint_trajectory``, and Franka's reflex (:mod:`manip_rl.robots.reflex`):
commands are interpolated at 1 kHz as a joint_trajectory_controller does (points with
velocities: cubic splines from the header stamp), and any commanded motion outside the FR3's
position, velocity, acceleration or jerk limits faults the arm, which then holds and refuses
commands until ``/action_server/error_recovery`` is called. That is a ``std_srvs/Trigger``
service here (franka_ros2's is a ``franka_msgs/action/ErrorRecovery`` action, and franka_msgs is
not installable from PyPI). ``~/reflexes`` (``std_msgs/UInt32``) counts the faults.
``actuator_latency`` delays a trajectory's stamp with its arrival, so it runs as planned, late.
This node is no real-time controller: on a loaded machine a trajectory can reach it late
(the reflex then reports how late the last one started). ``--rt-priority`` runs it as a robot's
controller runs, under SCHED_FIFO.
"""

from __future__ import annotations

import argparse
import collections
import gc
import time

import mujoco
import numpy as np
import rclpy
from geometry_msgs.msg import PointStamped, PoseStamped
from rclpy.duration import Duration as RosDuration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, UInt32
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from manip_rl import policy_io
from manip_rl.policy_io import SIM_JOINT_OFFSETS
from manip_rl.robots import get_robot
from manip_rl.robots.franka import SIM_MODEL_LOWER, SIM_MODEL_UPPER
from manip_rl.robots.reflex import EmulatedArm
from manip_rl.ros_bridge import dds
from manip_rl.ros_bridge.bridge_cli import add_robot_argument, ros_arguments
from manip_rl.ros_bridge.commands import clock_offset_ns

NODE_NAME = "sim_arm"
MAX_CATCH_UP_STEPS = 50  # physics steps one timer tick may run to catch up with wall time

PARAMETERS: dict[str, object] = {
    "env_id": "manip_rl/PandaReach-v0",
    "randomization": "default",  # "default", "none" or a YAML path (the envs' format)
    "seed": 0,  # seed of the first episode; later resets continue the random stream
    "joint_state_rate": 500.0,  # Hz
    "object_rate": 100.0,  # Hz, goal / object pose / success
    "sensor_latency": 0.0,  # s between a measurement and its publication
    "actuator_latency": 0.0,  # s between a command's arrival and its application
    "joint_states_topic": "/joint_states",
    "command_topic": "/forward_position_controller/commands",
    "trajectory_topic": "",  # "" = the robot's (fr3: /fr3_arm_controller/joint_trajectory)
    "gripper_topic": "/gripper_controller/commands",
    "base_frame": "panda_link0",
    "robot": "panda",  # "fr3": franka_ros2's names and topics, and Franka's reflex
    "reflex": "auto",  # "auto" (on for fr3), "on", "off"
    "arm_state_topic": "",  # "" = the robot's (fr3: /franka/joint_states; panda: none)
    "arm_state_rate": 250.0,  # Hz (franka_ros2's joint_state_broadcaster: 1 kHz)
    "error_recovery_service": "/action_server/error_recovery",
}
SIM_PROFILE_DEFAULTS = {
    "panda": {"trajectory_topic": "/joint_trajectory_controller/joint_trajectory", "reflex": "off"},
    "fr3": {
        "trajectory_topic": "/fr3_arm_controller/joint_trajectory",
        "reflex": "on",
        "arm_state_topic": "/franka/joint_states",
    },
}


class SimArm(Node):
    """The simulated arm node; see the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        for name, default in PARAMETERS.items():
            self.declare_parameter(name, default)
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        try:
            self.robot = get_robot(str(p["robot"]))
        except ValueError as e:
            raise SystemExit(f"sim_arm: parameter 'robot': {e}") from None
        for name, value in SIM_PROFILE_DEFAULTS[self.robot.name].items():
            p[name] = value if p[name] in ("", "auto") else p[name]
        if p["reflex"] not in ("on", "off"):
            raise SystemExit(f"sim_arm: parameter 'reflex' is {p['reflex']!r}: use auto, on, off")
        import gymnasium as gym

        import manip_rl  # noqa: F401  (registers the envs)

        try:
            self.env = gym.make(p["env_id"], randomization=p["randomization"])
        except Exception as e:
            raise SystemExit(
                f"sim_arm: cannot create env_id={p['env_id']!r} with randomization="
                f"{p['randomization']!r}: {e}"
            ) from None
        u = self.env.unwrapped
        self.u, self.model, self.data, self.ids = u, u.model, u.data, u.ids
        self.dt = float(self.model.opt.timestep)
        # Physics steps per control period: the env's task history (PandaLift's hold) advances
        # once per control period, as in env.step.
        self._substeps = max(1, round(u.control_period / self.dt))
        self.has_object = self.ids.object_body >= 0
        self.sensor_latency = max(0.0, float(p["sensor_latency"]))
        self.actuator_latency = max(0.0, float(p["actuator_latency"]))
        self.frame = p["base_frame"]
        self.seed = int(p["seed"])
        self.episode = 0
        self.counters = collections.Counter()
        self._log_times: dict[str, float] = {}
        self._rng = np.random.default_rng(self.seed)

        sensor_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.joint_pub = self.create_publisher(JointState, p["joint_states_topic"], sensor_qos)
        self.goal_pub = self.create_publisher(PointStamped, "~/goal", 10)
        self.success_pub = self.create_publisher(Bool, "~/success", 10)
        self.object_pub = (
            self.create_publisher(PoseStamped, "~/object_pose", sensor_qos)
            if self.has_object
            else None
        )
        self.create_subscription(Float64MultiArray, p["command_topic"], self._on_command, 10)
        self.create_subscription(JointTrajectory, p["trajectory_topic"], self._on_trajectory, 10)
        self.create_subscription(Float64MultiArray, p["gripper_topic"], self._on_gripper, 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self._clock_offset_ns = clock_offset_ns(self)
        self._recovery_name = p["error_recovery_service"]
        self.create_service(Trigger, self._recovery_name, self._on_recovery)
        self.reflex_pub = self.create_publisher(UInt32, "~/reflexes", 10)
        self._arm_names = list(self.robot.joint_names)
        self._lower = np.maximum(self.robot.lower, SIM_MODEL_LOWER)
        self._upper = np.minimum(self.robot.upper, SIM_MODEL_UPPER)
        self.arm = EmulatedArm(self.robot, self.robot.home, check=p["reflex"] == "on")
        self._names = self._arm_names + list(self.robot.finger_joint_names)
        self._js = JointState(name=self._names)
        self._arm_js = JointState(name=self._arm_names)
        self.arm_state_pub = None
        if p["arm_state_topic"]:
            self.arm_state_pub = self.create_publisher(JointState, p["arm_state_topic"], sensor_qos)
            self.create_timer(1.0 / float(p["arm_state_rate"]), self._publish_arm_state)
        self.reset_episode(seed=self.seed)
        gc.collect()  # keep full collections over the loaded modules out of the 2 ms loop
        gc.freeze()
        self.create_timer(1.0 / float(p["joint_state_rate"]), self._on_tick)
        self.create_timer(1.0 / float(p["object_rate"]), self._publish_task)
        self.get_logger().info(
            f"{p['env_id']} in real time ({self.dt * 1e3:g} ms steps), joint states at "
            f"{p['joint_state_rate']:g} Hz, sensor latency {self.sensor_latency * 1e3:g} ms, "
            f"actuator latency {self.actuator_latency * 1e3:g} ms, randomization "
            f"{p['randomization']}"
        )

    # ------------------------------------------------------------------ episodes
    def reset_episode(self, seed: int | None = None) -> None:
        self.env.reset(seed=seed)  # the env draws the episode's sensor bias and noise levels
        self._pending: collections.deque = collections.deque()  # (apply_time, kind, value)
        # A new episode puts the arm at rest at its new pose, any fault cleared (the count stays).
        home = self.data.ctrl[self.ids.arm_actuators] + SIM_JOINT_OFFSETS
        self.arm.reset(home, time.perf_counter())
        self._reported_fault = ""
        self._last_start_delay = 0.0
        self._history: collections.deque = collections.deque()  # (time, sample)
        now = time.perf_counter()
        self._published = None
        self._t0, self._steps = now, 0
        self._since_control = 0  # physics steps since the task history last advanced
        self._history.append((now, self._measure()))
        self.episode += 1

    def _on_recovery(self, request: Trigger.Request, response: Trigger.Response):
        fault = self.arm.fault
        self.arm.recover(time.perf_counter())
        self._reported_fault = ""
        response.success = True
        response.message = f"recovered from: {fault}" if fault else "no error to recover from"
        self.get_logger().info(response.message)
        return response

    def _on_reset(self, request: Trigger.Request, response: Trigger.Response):
        self.reset_episode()
        response.success = True
        response.message = f"episode {self.episode}: goal {np.round(self.u.goal, 3).tolist()}"
        self._publish_task()
        return response

    # ------------------------------------------------------------------ commands
    def _log_rejection(self, key: str, message: str, period: float = 2.0) -> None:
        """An error line at most every ``period`` s per kind of rejection (a bad stream must
        not flood the log, and one kind of problem must not hide another)."""
        now = time.monotonic()
        if now - self._log_times.get(key, -np.inf) >= period:
            self._log_times[key] = now
            self.get_logger().error(message)

    def _check_arm(self, values, source: str) -> np.ndarray | None:
        q = np.asarray(values, dtype=np.float64)
        if q.shape != (7,):
            self._log_rejection(
                f"{source} shape",
                f"{source}: expected 7 joint positions ({self._arm_names}), got {q.shape}",
            )
            return None
        if not np.isfinite(q).all():
            self.counters["rejected_nonfinite"] += 1
            self._log_rejection(
                f"{source} nonfinite", f"{source}: non-finite (NaN/inf) command rejected"
            )
            return None
        lo, hi = self._lower - 1e-6, self._upper + 1e-6
        if (q < lo).any() or (q > hi).any():
            self.counters["rejected_limits"] += 1
            self._log_rejection(
                f"{source} limits", f"{source}: command outside the joint limits rejected"
            )
            return None
        return q

    def _on_command(self, msg: Float64MultiArray) -> None:
        q = self._check_arm(msg.data, "forward position command")
        if q is not None:
            self.counters["commands"] += 1
            self._schedule(time.perf_counter() + self.actuator_latency, "arm", q)

    def _reject_trajectory(self, kind: str, why: str) -> None:
        self.counters["rejected_trajectories"] += 1
        self._log_rejection(f"trajectory {kind}", f"joint trajectory rejected: {why}")

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        names = list(msg.joint_names)
        if len(set(names)) != len(names):
            twice = sorted({n for n in names if names.count(n) > 1})
            self._reject_trajectory("names", f"joint names {twice} appear more than once")
            return
        where = {n: i for i, n in enumerate(names)}
        missing = [n for n in self._arm_names if n not in where]
        if missing or not msg.points:
            self._reject_trajectory("missing", f"missing joints {missing} or no points")
            return
        idx = [where[n] for n in self._arm_names]
        points = []
        prev_t = 0.0
        for k, pt in enumerate(msg.points):
            if len(pt.positions) != len(names):
                self._reject_trajectory(
                    "sizes",
                    f"point {k} has {len(pt.positions)} positions for {len(names)} joint names",
                )
                return
            q = self._check_arm([pt.positions[i] for i in idx], "joint trajectory")
            if q is None:
                return
            t = pt.time_from_start.sec + pt.time_from_start.nanosec * 1e-9
            if not (np.isfinite(t) and t >= prev_t):
                self._reject_trajectory(
                    "negative time" if not t >= 0 else "time order",
                    f"point {k} has time_from_start {t:g} s; times must be >= 0 and must not "
                    "decrease",
                )
                return
            v = None
            if len(pt.velocities):
                if len(pt.velocities) != len(names) or not np.isfinite(pt.velocities).all():
                    self._reject_trajectory("velocities", f"point {k}: bad velocities")
                    return
                v = np.array([pt.velocities[i] for i in idx])
            prev_t = t
            points.append((t, q, v))
        self.counters["trajectories"] += 1
        # Point times count from the header stamp (from the arrival when it is zero), mapped to
        # this node's perf_counter clock and delayed with the command by the actuator latency.
        now = time.perf_counter()
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        # On the perf_counter clock through an offset measured once (see commands.py).
        t_stamp = (stamp_ns - self._clock_offset_ns) * 1e-9 if stamp_ns else now
        if t_stamp < self._t0:  # sent before the last reset: the new episode never had it
            self.counters["stale_trajectories"] += 1
            return
        # A stamped trajectory starts actuator_latency after its stamp, as a controller that has
        # it by then would; or, arriving later, at the next 1 kHz tick (sampled between its
        # points as a joint_trajectory_controller does: the bridge's plans follow the previous
        # one for trajectory_timing_tolerance s, so one arriving within that joins exactly).
        t0 = t_stamp + self.actuator_latency if stamp_ns else now + self.actuator_latency
        points = [(t0 + t, q, v) for t, q, v in points]
        self._schedule(max(now, t0), "trajectory", (t0, points))

    def _schedule(self, t: float, kind: str, value) -> None:
        """Queue a command for time ``t``, the queue kept in time order."""
        pending = self._pending
        i = len(pending)
        while i and pending[i - 1][0] > t:
            i -= 1
        pending.insert(i, (t, kind, value))

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        g = np.asarray(msg.data, dtype=np.float64)
        if g.shape != (2,) or not np.isfinite(g).all():
            self._log_rejection(
                "gripper", "gripper command must be 2 finite finger positions (m): rejected"
            )
            return
        g = np.clip(g, 0.0, policy_io.GRIPPER_MAX_OPENING / 2)
        self._schedule(time.perf_counter() + self.actuator_latency, "gripper", g)

    def _apply_pending(self, t: float) -> None:
        d, ids, arm = self.data, self.ids, self.arm
        while self._pending and self._pending[0][0] <= t:
            t_cmd, kind, value = self._pending.popleft()
            arm.advance(t_cmd)
            if kind == "arm":
                arm.command_position(value)
            elif kind == "trajectory":
                t_start, points = value
                # How late it starts after its stamp (+ actuator latency): beyond the bridge's
                # trajectory_timing_tolerance the arm's motion may jump (a reflex).
                self._last_start_delay = max(t_start, arm.tick_time) - t_start
                if not arm.command_trajectory(t_start, points) and not arm.fault:
                    self._reject_trajectory("past", "every point lies in the past")
            else:
                d.ctrl[ids.finger_actuators] = value
        d.ctrl[ids.arm_actuators] = arm.advance(t) - SIM_JOINT_OFFSETS
        if arm.fault and arm.fault != self._reported_fault:
            self._reported_fault = arm.fault
            self.get_logger().error(
                f"reflex: {arm.fault}; the arm stopped. Call {self._recovery_name} to recover "
                f"(the last trajectory started {self._last_start_delay * 1e3:.1f} ms after its "
                "stamp + actuator_latency)"
            )

    # ------------------------------------------------------------------ physics and sensing
    def _measure(self) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The env's sensor reading (noise from this node's stream, so the env's episode
        sampling is the same with or without sim_arm's draws) and the true finger velocities
        (no sensor field of the policy's)."""
        reading = self.u.read_sensors(self._rng)
        return reading, self.data.qvel[self.ids.finger_dof].copy()

    def _on_tick(self) -> None:
        now = time.perf_counter()
        due = int((now - self._t0) / self.dt) - self._steps
        if due > MAX_CATCH_UP_STEPS:
            # The process was starved: drop the backlog instead of running the arm fast-forward.
            self.counters["dropped_steps"] += due - MAX_CATCH_UP_STEPS
            self._steps += due - MAX_CATCH_UP_STEPS
            due = MAX_CATCH_UP_STEPS
        for _ in range(due):
            self._steps += 1
            self._apply_pending(self._t0 + self._steps * self.dt)
            mujoco.mj_step(self.model, self.data)
            self._since_control += 1
            if self._since_control == self._substeps:
                self._since_control = 0
                self.u.advance_task_state()
        if due:
            self._history.append((self._t0 + self._steps * self.dt, self._measure()))
        # Publish the newest measurement that is at least sensor_latency old (at the joint state
        # rate, as a joint_state_broadcaster does, even when no physics step fell in this tick).
        cutoff = now - self.sensor_latency
        while self._history and self._history[0][0] <= cutoff:
            self._published = self._history.popleft()
        if self._published is not None:
            self._publish_joint_state(*self._published)

    def _publish_joint_state(self, t: float, sample) -> None:
        reading, finger_vel = sample
        js = self._js
        # Stamped with the measurement time, as a robot's state interface does.
        age = RosDuration(nanoseconds=int(max(0.0, time.perf_counter() - t) * 1e9))
        js.header.stamp = (self.get_clock().now() - age).to_msg()
        half_opening = 0.5 * float(reading["gripper_opening"][0])
        js.position = [*reading["joint_pos"].tolist(), half_opening, half_opening]
        js.velocity = [*reading["joint_vel"].tolist(), *finger_vel.tolist()]
        self.joint_pub.publish(js)
        self._arm_sample = (js.header.stamp, js.position[:7], js.velocity[:7])
        if self.has_object:
            self._last_object = (reading["object_pos"], reading["object_quat"])

    def _publish_arm_state(self) -> None:
        """The arm's joints alone (franka_ros2's /franka/joint_states), the newest sample."""
        sample = getattr(self, "_arm_sample", None)
        if sample is not None:
            js = self._arm_js
            js.header.stamp, js.position, js.velocity = sample
            self.arm_state_pub.publish(js)

    def _publish_task(self) -> None:
        stamp = self.get_clock().now().to_msg()
        goal = PointStamped()
        goal.header.stamp, goal.header.frame_id = stamp, self.frame
        goal.point.x, goal.point.y, goal.point.z = (float(x) for x in self.u.goal)
        self.goal_pub.publish(goal)
        if self.object_pub is not None:
            obj = getattr(self, "_last_object", None)
            if obj is not None:
                pos, quat = obj
                pose = PoseStamped()
                pose.header.stamp, pose.header.frame_id = stamp, self.frame
                p, o = pose.pose.position, pose.pose.orientation
                p.x, p.y, p.z = (float(x) for x in pos)
                o.w, o.x, o.y, o.z = (float(x) for x in quat)
                self.object_pub.publish(pose)
        self.success_pub.publish(Bool(data=self.is_success()))
        self.reflex_pub.publish(UInt32(data=self.arm.reflexes))

    def is_success(self) -> bool:
        """The env's success test on the true (noise-free) state."""
        mujoco.mj_kinematics(self.model, self.data)  # mj_step leaves positions one step old
        return self.u.is_success()


# ---------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env-id", help="task scene (default manip_rl/PandaReach-v0)")
    p.add_argument(
        "--params-file",
        help=f"ROS 2 parameter YAML (default: {dds.SIM_PARAMS.relative_to(dds.REPO_ROOT)})",
    )
    add_robot_argument(p)
    dds.add_realtime_arguments(p)
    p.add_argument(
        "--ros-args",
        dest="ros_args",
        nargs=argparse.REMAINDER,
        default=[],
        help="further ROS 2 arguments, e.g. --ros-args -p sensor_latency:=0.01",
    )


def run(args: argparse.Namespace) -> int:
    ros_args = ros_arguments(args, dds.SIM_PARAMS)
    if args.env_id:
        ros_args += ["-p", f"env_id:={args.env_id}"]
    messages = dds.apply_realtime_arguments(args)
    rclpy.init(args=["manip-rl-sim-arm", *ros_args])
    dds.stop_on_sigterm()
    node = None
    try:
        node = SimArm()
        for message in messages:
            node.get_logger().info(message)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        dds.spin_until_stopped(executor, node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
