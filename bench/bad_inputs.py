"""Bad inputs against policy_bridge and sim_arm over real DDS (issue #20, "Nothing implausible
becomes a command"). Run: ``PYTHONPATH=$PWD python bench/bad_inputs.py [--json out.json]``.

* **Bridge, joint states and goals.** ``manip-rl serve`` with the shipped PandaReach policy and
  the default parameters (launch/config/sim.yaml) against an arm played by this process. Each bad
  input is tried in three moments: while disabled followed by an enable request, right after an
  enable, and while enabled and commanding; then the arm reads plausibly again.
* **Bridge, edited policy files.** The shipped file with its manip_rl.json metadata rewritten
  (limits, joint names, control period, joint scale): each is served to an arm standing 0.04 rad
  past the policy's limits, and must be refused or served within the robot's real limits.
* **Bridge, perception and operator (issue #16).** Goals and joint states stamped too old, in
  the future or unstamped, goals in another frame or jumping; with the shipped PandaPush policy,
  object poses that are NaN, have a zero quaternion, are stale, future-stamped, in another frame
  or jump; with ``heartbeat: required``, a heartbeat that stops or never came. Each must hold
  (or lapse the enable) and say so in the bridge's log.
* **sim_arm.** Bad forward commands, joint trajectories and gripper commands.

Counted: cases tried; commands outside the robot's real limits (the bridge's: the policy's
limits intersected with the datasheet's; sim_arm's: joint states outside the datasheet's);
first commands after an enable farther from the arm's last plausible position than the ramp-in
allows; crashes (a node process that died, or a traceback in its log, or a bridge that neither
served an edited file nor exited refusing it); bad inputs of issue #16 that left no log line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from manip_rl import policy_io  # noqa: E402
from manip_rl.policy_io import PANDA_FINGER_JOINT_NAMES, PANDA_JOINT_NAMES  # noqa: E402
from manip_rl.robots import PANDA  # noqa: E402
from manip_rl.ros_bridge import dds  # noqa: E402

HOME9 = np.concatenate([policy_io.PANDA_HOME, [0.04, 0.04]])
NAMES9 = [*PANDA_JOINT_NAMES, *PANDA_FINGER_JOINT_NAMES]
REAL_LOWER = np.maximum(policy_io.PANDA_JOINT_LOWER, PANDA.lower)
REAL_UPPER = np.minimum(policy_io.PANDA_JOINT_UPPER, PANDA.upper)
FIRST_STEP = 6.0 * 0.04 / 5  # sim.yaml: max_joint_speed 6 rad/s x 40 ms, ramp-in over 5 steps
GOAL = (0.5, 0.1, 0.3)


def _with(index: int, value: float, base=HOME9) -> np.ndarray:
    q = np.array(base, dtype=np.float64)
    q[index] = value
    return q


# name -> (names, position, velocity); None = the plausible default
JOINT_STATE_CASES: dict[str, tuple] = {
    "joint1 +1e6 rad": (None, _with(0, 1e6), None),
    "joint1 -1e6 rad": (None, _with(0, -1e6), None),
    "joint1 1e300 rad": (None, _with(0, 1e300), None),
    "joint4 0.5 rad past its upper limit": (None, _with(3, PANDA.upper[3] + 0.5), None),
    "all joints 0 rad (joint4 outside)": (None, np.concatenate([np.zeros(7), [0.04, 0.04]]), None),
    "joint3 NaN": (None, _with(2, np.nan), None),
    "joint2 +inf": (None, _with(1, np.inf), None),
    "velocity NaN": (None, None, _with(4, np.nan, np.zeros(9))),
    "velocity 1e6": (None, None, _with(4, 1e6, np.zeros(9))),
    "joint1 named twice, 2.0 last": ([*NAMES9, "panda_joint1"], np.append(HOME9, 2.0), "zeros"),
    "joint1 named twice, 1e6 last": ([*NAMES9, "panda_joint1"], np.append(HOME9, 1e6), "zeros"),
    "joint1 jumps 1.5 rad (within limits)": (None, _with(0, HOME9[0] + 1.5), None),
    "joint6 jumps 1.0 rad (within limits)": (None, _with(5, HOME9[5] + 1.0), None),
    "joint7 missing": (NAMES9[:6] + NAMES9[7:], np.delete(HOME9, 6), "zeros"),
    "positions shorter than names": (None, HOME9[:5], None),
    "no velocities": (None, None, []),
    "empty message": ([], [], []),
    "finger 1e6": (None, _with(7, 1e6), None),
    "unknown extra joint 1e6": ([*NAMES9, "extra"], np.append(HOME9, 1e6), "zeros"),
}
GOAL_CASES = {
    "goal NaN": (float("nan"), 0.1, 0.3),
    "goal inf": (float("inf"), 0.1, 0.3),
    "goal 1e6 m away": (1e6, 1e6, 1e6),
}
MOMENTS = ("disabled, then enable", "right after enable", "while enabled")
BASE_FRAME = "panda_link0"
OBJECT = (0.5, 0.0, 0.02)  # a cube on the table in front of the arm

# name -> (Arm attributes to set, the bridge's log line for it); issue #16
PERCEPTION_CASES: dict[str, tuple[dict, str]] = {
    "goal stamped 2 s ago": ({"goal_offset": -2.0}, "s old on arrival"),
    "goal stamped 2 s ahead": ({"goal_offset": 2.0}, "in the future"),
    "goal unstamped": ({"goal_unstamped": True}, "was it stamped"),
    "goal in frame camera_link": ({"goal_frame": "camera_link"}, "frame_id 'camera_link'"),
    "goal with empty frame_id": ({"goal_frame": ""}, "frame_id ''"),
    "goal jumps 0.5 m": ({"goal": (0.5, 0.6, 0.3)}, "goal refused: moved"),
    "joint state stamped 1 s ahead": ({"state_offset": 1.0}, "in the future"),
    "joint state stamped 1 s ago": ({"state_offset": -1.0}, "old by its stamp"),
}
OBJECT_CASES: dict[str, tuple[dict, str]] = {
    "object NaN": ({"object": (float("nan"), 0.0, 0.02)}, "NaN or infinite"),
    "object quaternion NaN": ({"object_quat": (float("nan"), 0, 0, 1)}, "NaN or infinite"),
    "object quaternion zero": ({"object_quat": (0.0, 0, 0, 0)}, "norm 0"),
    "object stamped 1 s ago": ({"object_offset": -1.0}, "s old on arrival"),
    "object stamped 1 s ahead": ({"object_offset": 1.0}, "in the future"),
    "object in frame camera_link": ({"object_frame": "camera_link"}, "frame_id 'camera_link'"),
    "object jumps 0.5 m": ({"object": (0.5, 0.5, 0.02)}, "object pose refused: moved"),
    "object pose stops": ({"object_publishing": False}, "object pose is"),
}


class Arm:
    """The arm side of the bridge: joint states at 250 Hz, the goal, the commands received."""

    def __init__(self, context) -> None:
        import rclpy
        from geometry_msgs.msg import PointStamped
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray
        from std_srvs.srv import SetBool

        self.node = rclpy.create_node(f"bad_inputs_arm_{os.getpid()}", context=context)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._JointState, self._SetBool = JointState, SetBool
        self.good()
        self.commands: list[tuple[float, np.ndarray]] = []
        self.js_pub = self.node.create_publisher(JointState, "/joint_states", 10)
        self.goal_pub = self.node.create_publisher(PointStamped, "/bad_inputs/goal", 10)
        self._goal_msg = PointStamped()
        from geometry_msgs.msg import PoseStamped
        from std_msgs.msg import Bool

        self._pose_msg, self._Bool = PoseStamped(), Bool
        self.object_pub = self.node.create_publisher(PoseStamped, "/bad_inputs/object_pose", 10)
        self.heartbeat_pub = self.node.create_publisher(Bool, "/policy_bridge/heartbeat", 10)
        self.heartbeat = False
        self.node.create_subscription(
            Float64MultiArray,
            "/forward_position_controller/commands",
            lambda m: self.commands.append((time.monotonic(), np.array(m.data))),
            10,
        )
        self.node.create_timer(1 / 250, self._tick)
        self.enable_client = self.node.create_client(SetBool, "/policy_bridge/enable")

    def good(self, position=HOME9) -> None:
        self.names, self.position, self.velocity, self.goal = NAMES9, position, np.zeros(9), GOAL
        # Perception as it should be: stamped now, in the base frame (issue #16).
        self.goal_offset = self.object_offset = self.state_offset = 0.0
        self.goal_unstamped = False
        self.goal_frame = self.object_frame = BASE_FRAME
        self.object, self.object_quat, self.object_publishing = OBJECT, (1.0, 0, 0, 0), True

    def _stamp(self, offset: float):
        from builtin_interfaces.msg import Time

        t = self.node.get_clock().now().nanoseconds * 1e-9 + offset
        return Time(sec=int(t), nanosec=int((t - int(t)) * 1e9))

    def set_case(self, case: tuple) -> None:
        names, position, velocity = case
        self.names = NAMES9 if names is None else names
        self.position = HOME9 if position is None else position
        if isinstance(velocity, str):  # "zeros": one per name
            velocity = np.zeros(len(self.names))
        self.velocity = np.zeros(9) if velocity is None else velocity

    def _tick(self) -> None:
        g = self._goal_msg
        g.point.x, g.point.y, g.point.z = (float(x) for x in self.goal)
        g.header.frame_id = self.goal_frame
        g.header.stamp = self._stamp(self.goal_offset)
        if self.goal_unstamped:
            g.header.stamp.sec = g.header.stamp.nanosec = 0
        self.goal_pub.publish(g)
        if self.object_publishing:
            pose = self._pose_msg
            pose.header.frame_id, pose.header.stamp = (
                self.object_frame,
                self._stamp(self.object_offset),
            )
            p, o = pose.pose.position, pose.pose.orientation
            p.x, p.y, p.z = (float(x) for x in self.object)
            o.w, o.x, o.y, o.z = (float(x) for x in self.object_quat)
            self.object_pub.publish(pose)
        if self.heartbeat:
            self.heartbeat_pub.publish(self._Bool(data=True))
        msg = self._JointState(
            name=list(self.names),
            position=[float(x) for x in self.position],
            velocity=[float(x) for x in self.velocity],
        )
        msg.header.stamp = self._stamp(self.state_offset)
        self.js_pub.publish(msg)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.005)

    def enable(self, on: bool) -> bool:
        if not self.enable_client.wait_for_service(timeout_sec=10.0):
            return False
        future = self.enable_client.call_async(self._SetBool.Request(data=on))
        end = time.monotonic() + 10
        while not future.done() and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.01)
        return bool(future.done() and future.result().success)

    def wait_commands(self, timeout: float) -> bool:
        n = len(self.commands)
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self.commands) == n:
            self.spin(0.02)
        return len(self.commands) > n

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


class Tally:
    def __init__(self) -> None:
        self.cases = 0
        self.outside = 0
        self.jumps = 0
        self.crashes = 0
        self.unlogged = 0
        self.lines: list[str] = []

    def record(
        self,
        name: str,
        outside: int,
        jumps: int,
        crashed: bool,
        note: str = "",
        unlogged: bool = False,
    ) -> None:
        self.cases += 1
        self.outside += outside
        self.jumps += jumps
        self.crashes += int(crashed)
        self.unlogged += int(unlogged)
        flag = "FAIL" if (outside or jumps or crashed or unlogged) else "ok"
        self.lines.append(f"{flag:4} {name}: {note}")
        print(self.lines[-1], flush=True)


def _outside(commands) -> int:
    return sum(
        int(((c < REAL_LOWER - 1e-9) | (c > REAL_UPPER + 1e-9)).any() or c.shape != (7,))
        for c in commands
    )


def _crashed(proc, log: Path) -> bool:
    return proc.poll() is not None or "Traceback" in log.read_text()


def _wait_active(arm: Arm, proc, log: Path, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if "active at" in log.read_text():
            return True
        arm.spin(0.2)
    return False


def _bridge_case(arm: Arm, bad, moment: str) -> tuple:
    """One bad input (``bad()`` sets it on the arm) at one moment; returns (commands, enable
    times)."""
    arm.good()
    arm.enable(False)
    arm.spin(0.3)
    arm.commands.clear()
    enabled_at: list[float] = []

    def enable() -> None:
        t = time.monotonic()
        if arm.enable(True):
            enabled_at.append(t)

    if moment == "disabled, then enable":
        bad()
        # (0.15 s: a jump within the limits becomes plausible once the arm could have made it,
        # 0.44 s for 1.5 rad; this moment tests the implausible one)
        arm.spin(0.15)
        enable()
        arm.spin(0.5)
    elif moment == "right after enable":
        enable()
        bad()
        arm.spin(0.8)
    else:
        enable()
        arm.spin(0.5)
        bad()
        arm.spin(0.8)
    # Plausible again: once the jump test settles, enabling must work and ease in.
    arm.good()
    arm.spin(0.6)
    arm.enable(False)
    arm.spin(0.1)
    enable()
    arm.spin(0.5)
    return list(arm.commands), enabled_at


def bridge_input_cases(context, workdir: Path, tally: Tally) -> None:
    log = workdir / "bridge_inputs.log"
    proc = dds.start_node(
        "serve",
        ["--autostart", "--ros-args", "-p", "goal_topic:=/bad_inputs/goal"],
        DOMAIN,
        log,
    )
    arm = Arm(context)
    try:
        if not _wait_active(arm, proc, log):
            raise SystemExit(f"the bridge did not become active:\n{log.read_text()[-2000:]}")
        cases = [(n, lambda c=c: arm.set_case(c), "") for n, c in JOINT_STATE_CASES.items()]
        cases += [(n, lambda g=g: setattr(arm, "goal", g), "") for n, g in GOAL_CASES.items()]
        cases += [(n, lambda a=a: _set_attrs(arm, a), t) for n, (a, t) in PERCEPTION_CASES.items()]
        _run_cases(arm, proc, log, tally, cases)
    finally:
        arm.close()
        dds.stop_node(proc)


def _set_attrs(arm: Arm, attrs: dict) -> None:
    for k, v in attrs.items():
        setattr(arm, k, v)


def _run_cases(arm: Arm, proc, log: Path, tally: Tally, cases, moments=MOMENTS) -> None:
    """Each (name, bad, log text) at each moment; the log text ('' for none expected) must
    appear in the bridge's log during the case."""
    for name, bad, logged in cases:
        for moment in moments:
            before = len(log.read_text())
            received, enabled_at = _bridge_case(arm, bad, moment)
            jumps, note = 0, ""
            for t in enabled_at:  # the first command after each enable vs the arm (HOME)
                after = [(tc, c) for tc, c in received if tc >= t]
                if after:
                    dist = float(np.max(np.abs(after[0][1] - policy_io.PANDA_HOME)))
                    if dist > FIRST_STEP + 1e-9:
                        jumps += 1
                        note += f"; first command {dist:.3f} rad from the arm, "
                        note += f"{(after[0][0] - t) * 1e3:.0f} ms after the enable request"
            # The jump cases are judged only while commanding; a disabled bridge takes them.
            expect = logged and (moment == "while enabled" or "jumps" not in name)
            tally.record(
                f"bridge: {name} ({moment})",
                _outside([c for _, c in received]),
                jumps,
                _crashed(proc, log),
                f"{len(received)} commands, {len(enabled_at)} enables{note}",
                unlogged=bool(expect) and logged not in log.read_text()[before:],
            )
            if proc.poll() is not None:
                return


def object_and_operator_cases(context, workdir: Path, tally: Tally) -> None:
    """The shipped PandaPush policy (it observes the object pose), then a heartbeat-required
    bridge: bad object poses; a heartbeat that never came or stops."""
    push = str(dds.PRETRAINED_DIR / "panda_push.pt")
    topics = [
        "-p",
        "goal_topic:=/bad_inputs/goal",
        "-p",
        "object_pose_topic:=/bad_inputs/object_pose",
    ]
    log = workdir / "bridge_objects.log"
    proc = dds.start_node(
        "serve", ["--policy", push, "--autostart", "--ros-args", *topics], DOMAIN, log
    )
    arm = Arm(context)
    try:
        if not _wait_active(arm, proc, log):
            raise SystemExit(f"the push bridge did not become active:\n{log.read_text()[-2000:]}")
        cases = [(n, lambda a=a: _set_attrs(arm, a), t) for n, (a, t) in OBJECT_CASES.items()]
        _run_cases(arm, proc, log, tally, cases)
    finally:
        arm.close()
        dds.stop_node(proc)
    log = workdir / "bridge_heartbeat.log"
    args = ["--autostart", "--ros-args", *topics[:2], "-p", "heartbeat:=required"]
    proc = dds.start_node("serve", args, DOMAIN, log)
    arm = Arm(context)
    try:
        if not _wait_active(arm, proc, log):
            raise SystemExit(f"the bridge did not become active:\n{log.read_text()[-2000:]}")
        arm.good()
        refused = not arm.enable(True)
        tally.record(
            "bridge: enable without a heartbeat",
            _outside([c for _, c in arm.commands]),
            0,
            _crashed(proc, log),
            "refused" if refused else "ENABLED",
            unlogged=not refused or "no heartbeat" not in log.read_text(),
        )
        arm.heartbeat = True
        arm.spin(0.3)
        enabled = arm.enable(True)
        arm.spin(0.8)
        arm.heartbeat = False
        t_stop = time.monotonic()
        arm.spin(1.5)
        late = [c for tc, c in arm.commands if tc > t_stop + 0.5 + 0.3]
        tally.record(
            "bridge: heartbeat stops while enabled",
            _outside([c for _, c in arm.commands]) + len(late),  # a command after the lapse
            0,
            _crashed(proc, log),
            f"enabled {enabled}, {len(late)} commands after the lapse",
            unlogged="enable lapsed: no heartbeat" not in log.read_text(),
        )
    finally:
        arm.close()
        dds.stop_node(proc)


def edit_policy_metadata(src: str, dst: str, edit) -> None:
    """``src`` copied to ``dst`` with manip_rl.json changed by ``edit`` (weights untouched)."""
    import torch

    from manip_rl.export import METADATA_FILE

    extra = {METADATA_FILE: ""}
    module = torch.jit.load(src, map_location="cpu", _extra_files=extra)
    md = json.loads(extra[METADATA_FILE])
    edit(md)
    torch.jit.save(module, dst, _extra_files={METADATA_FILE: json.dumps(md)})


def _set(path: str, value):
    keys = path.split(".")

    def edit(md: dict) -> None:
        d = md
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value(d[keys[-1]]) if callable(value) else value

    return edit


FILE_CASES = {
    "limits +-10 rad": lambda md: (
        _set("action.lower", [-10.0] * 7)(md),
        _set("action.upper", [10.0] * 7)(md),
    ),
    "limits NaN": _set("action.upper", [float("nan")] * 7),
    "limits swapped": lambda md: md["action"].update(
        lower=md["action"]["upper"], upper=md["action"]["lower"]
    ),
    "3 limits": _set("action.upper", [1.0, 1.0, 1.0]),
    "seven joints named panda_joint1": _set("action.joint_names", ["panda_joint1"] * 7),
    "joint names reversed": _set("action.joint_names", lambda n: list(reversed(n))),
    "control period 1e6 s": _set("control_period_s", 1e6),
    "control period 1e-9 s": _set("control_period_s", 1e-9),
    "joint_scale_rad 50": _set("action.joint_scale_rad", 50.0),
    "joint_scale_rad -1": _set("action.joint_scale_rad", -1.0),
    "home 1e6": _set("action.home", [1e6] * 7),
}


def policy_file_cases(context, workdir: Path, tally: Tally) -> None:
    shipped = str(dds.default_policy_path())
    edge = np.concatenate([policy_io.PANDA_JOINT_UPPER + 0.04, [0.04, 0.04]])
    for name, edit in FILE_CASES.items():
        path = str(workdir / "edited.pt")
        edit_policy_metadata(shipped, path, edit)
        log = workdir / "bridge_file.log"
        proc = dds.start_node(
            "serve",
            ["--policy", path, "--autostart", "--ros-args", "-p", "goal_topic:=/bad_inputs/goal"],
            DOMAIN,
            log,
        )
        arm = Arm(context)
        arm.good(edge)
        try:
            served = _wait_active(arm, proc, log, 45.0)
            if served:
                arm.enable(True)
                arm.spin(1.5)
                outcome = "served"
            else:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:  # up, unconfigured, silent: counted as a crash
                    pass
                text = log.read_text()
                refused = proc.poll() not in (None, 0) and "configure failed" in text
                outcome = "refused" if refused else "neither served nor refused"
            cmds = [c for _, c in arm.commands]
            # Served: the arm stands past the policy's limits, so only the datasheet's apply.
            outside = sum(
                int(((c < PANDA.lower - 1e-9) | (c > PANDA.upper + 1e-9)).any()) for c in cmds
            )
            crashed = "Traceback" in log.read_text() or outcome.startswith("neither")
            tally.record(
                f"policy file: {name}", outside, 0, crashed, f"{outcome}, {len(cmds)} commands"
            )
        finally:
            arm.close()
            dds.stop_node(proc)


def sim_arm_cases(context, workdir: Path, tally: Tally) -> None:
    import rclpy
    from builtin_interfaces.msg import Duration
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    log = workdir / "sim_arm.log"
    proc = dds.start_node("sim-arm", ["--ros-args", "-p", "randomization:=none"], DOMAIN, log)
    node = rclpy.create_node(f"bad_inputs_ctl_{os.getpid()}", context=context)
    ex = SingleThreadedExecutor(context=context)
    ex.add_node(node)
    states: list[np.ndarray] = []
    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)

    def on_state(msg) -> None:
        where = {n: i for i, n in enumerate(msg.name)}
        states.append(np.array([msg.position[where[n]] for n in PANDA_JOINT_NAMES]))

    node.create_subscription(JointState, "/joint_states", on_state, qos)
    cmd = node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", 10)
    traj = node.create_publisher(
        JointTrajectory, "/joint_trajectory_controller/joint_trajectory", 10
    )
    grip = node.create_publisher(Float64MultiArray, "/gripper_controller/commands", 10)

    def spin(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.005)

    def point(q, sec=0, nanosec=200_000_000):
        return JointTrajectoryPoint(
            positions=[float(x) for x in q], time_from_start=Duration(sec=sec, nanosec=nanosec)
        )

    home = policy_io.PANDA_HOME
    names = list(PANDA_JOINT_NAMES)
    far = _with(3, 0.5, home)  # joint 4 past its limit
    ok = home + 0.1
    cases = {
        "command NaN": (cmd, Float64MultiArray(data=(home * np.nan).tolist())),
        "command inf": (cmd, Float64MultiArray(data=_with(0, np.inf, home).tolist())),
        "command 3 values": (cmd, Float64MultiArray(data=[0.0, 0.0, 0.0])),
        "command empty": (cmd, Float64MultiArray(data=[])),
        "command joint4 past its limit": (cmd, Float64MultiArray(data=far.tolist())),
        "command 1e6": (cmd, Float64MultiArray(data=[1e6] * 7)),
        "trajectory point with 3 positions": (traj, JointTrajectory(joint_names=names, points=[point(ok[:3])])),
        "trajectory point with 9 positions": (traj, JointTrajectory(joint_names=names, points=[point([*ok, 0, 0])])),
        "trajectory negative time": (traj, JointTrajectory(joint_names=names, points=[point(ok, sec=-5)])),
        "trajectory decreasing times": (traj, JointTrajectory(joint_names=names, points=[point(ok), point(ok, 0, 1)])),
        "trajectory duplicate names": (traj, JointTrajectory(joint_names=[*names[:6], names[0]], points=[point(ok)])),
        "trajectory missing joint": (traj, JointTrajectory(joint_names=names[:6], points=[point(ok[:6])])),
        "trajectory no points": (traj, JointTrajectory(joint_names=names, points=[])),
        "trajectory NaN": (traj, JointTrajectory(joint_names=names, points=[point(home * np.nan)])),
        "trajectory past the limits": (traj, JointTrajectory(joint_names=names, points=[point(far)])),
        "gripper NaN": (grip, Float64MultiArray(data=[float("nan"), 0.0])),
        "gripper 3 values": (grip, Float64MultiArray(data=[0.01, 0.01, 0.01])),
        "gripper 1e6": (grip, Float64MultiArray(data=[1e6, 1e6])),
    }  # fmt: skip
    try:
        end = time.monotonic() + 60
        while not states and time.monotonic() < end:
            spin(0.1)
        if not states:
            raise SystemExit(f"sim_arm published no joint states:\n{log.read_text()[-2000:]}")
        for name, (pub, msg) in cases.items():
            states.clear()
            pub.publish(msg)
            spin(0.6)
            arm = np.array(states) if states else np.zeros((0, 7))
            outside = int(
                ((arm < PANDA.lower - 0.01) | (arm > PANDA.upper + 0.01)).any(axis=1).sum()
            )
            tally.record(f"sim_arm: {name}", outside, 0, _crashed(proc, log), f"{len(arm)} states")
            if proc.poll() is not None:
                return
    finally:
        ex.shutdown()
        node.destroy_node()
        dds.stop_node(proc)


DOMAIN = dds.domain_id_for(os.getpid() + 53)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write the tally here")
    p.add_argument(
        "--only", choices=("inputs", "objects", "files", "sim"), help="one group of cases"
    )
    args = p.parse_args()
    import rclpy

    dds.keep_dds_local(DOMAIN)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN)
    tally = Tally()
    try:
        with tempfile.TemporaryDirectory(prefix="manip_rl_bad_inputs_") as tmp:
            workdir = Path(tmp)
            if args.only in (None, "inputs"):
                bridge_input_cases(context, workdir, tally)
            if args.only in (None, "objects"):
                object_and_operator_cases(context, workdir, tally)
            if args.only in (None, "files"):
                policy_file_cases(context, workdir, tally)
            if args.only in (None, "sim"):
                sim_arm_cases(context, workdir, tally)
    finally:
        rclpy.shutdown(context=context)
    summary = {
        "cases_tried": tally.cases,
        "commands_outside_real_limits": tally.outside,
        "first_command_jumps_beyond_ramp_in": tally.jumps,
        "crashes": tally.crashes,
        "bad_inputs_without_log_line": tally.unlogged,
    }
    print(
        f"Bad inputs tried against the bridge and sim-arm: {tally.cases} cases; "
        f"{tally.outside} commands outside the robot's real limits, {tally.jumps} first-command "
        f"jumps beyond the ramp-in allowance, {tally.crashes} crashes, {tally.unlogged} bad inputs "
        "without a log line"
    )
    if args.json:
        from manip_rl.fileio import atomic_write_text

        atomic_write_text(args.json, json.dumps({**summary, "cases": tally.lines}, indent=1))
    return 0 if not (tally.outside or tally.jumps or tally.crashes or tally.unlogged) else 1


if __name__ == "__main__":
    sys.exit(main())
