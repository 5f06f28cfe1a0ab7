"""``policy_bridge``: a ROS 2 lifecycle node that serves an exported policy file to an arm.

Lifecycle (``ros2 lifecycle set /policy_bridge configure|activate|deactivate|cleanup``, or the
``autostart`` parameter): **configure** loads and validates the policy file and creates the
subscriptions and publishers; **activate** checks the contract (``/joint_states`` names every
joint the policy needs, the configured rate matches the policy's control period) and starts the
control loop, refusing with a log line that says why; **deactivate** stops commanding (the arm
holds its last target); **cleanup** releases the policy.

Even when active the bridge sends nothing until ``~/enable`` (``std_srvs/SetBool``) arms the
safety filter (:mod:`manip_rl.ros_bridge.safety`). Inputs: ``/joint_states`` (matched by joint
name), ``~/goal`` (``geometry_msgs/PointStamped``), ``~/object_pose`` (``PoseStamped``, push and
pick-and-place). Outputs: ``std_msgs/Float64MultiArray`` on
``/forward_position_controller/commands`` or ``trajectory_msgs/JointTrajectory`` on
``/joint_trajectory_controller/joint_trajectory`` (parameter ``output``), the gripper on
``/gripper_controller/commands``, and ``/diagnostics``. See docs/ros2.md.

Control steps run on the arrival of the first joint state at or after each tick of the control
period (``trigger: state``, the way a ros2_control controller updates right after the hardware
read), so a command leaves within the policy's inference time of the state it was built from; a
timer at the control period catches missing states and holds. ``trigger: timer`` runs steps on
the timer alone.

The node is this module; its parameters and limits are in :mod:`.bridge_params`, its loop
statistics and diagnostics in :mod:`.loop_stats`, its command line (``manip-rl serve``) in
:mod:`.bridge_cli`.
"""

from __future__ import annotations

import gc
import json
import math
import time
from pathlib import Path

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped, PoseStamped
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool

from manip_rl.fileio import atomic_write_text
from manip_rl.robots import get_robot
from manip_rl.ros_bridge import bridge_params, dds, loop_stats, profiles
from manip_rl.ros_bridge.bridge_cli import add_arguments, ros_arguments, run
from manip_rl.ros_bridge.bridge_params import PARAMETERS, RATE_TOLERANCE
from manip_rl.ros_bridge.commands import CommandOutput
from manip_rl.ros_bridge.control_clock import ControlClock
from manip_rl.ros_bridge.plausibility import StateCheck
from manip_rl.ros_bridge.runner import JointStateError, PolicyRunner
from manip_rl.ros_bridge.safety import (
    HOLD_NONFINITE,
    OK,
    SafetyFilter,
    bridge_control_period,
    check_action_spec_for_robot,
)

NODE_NAME = "policy_bridge"
# The names manip-rl serve, the launch files and the tests take from this module.
__all__ = ["PARAMETERS", "RATE_TOLERANCE", "PolicyBridge", "add_arguments", "ros_arguments", "run"]


class PolicyBridge(LifecycleNode):
    """The policy bridge node; see the module docstring."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs) -> None:
        super().__init__(node_name, **kwargs)
        for name, default in PARAMETERS.items():
            self.declare_parameter(name, default)
        self.policy = None
        self.runner: PolicyRunner | None = None
        self.safety: SafetyFilter | None = None
        self.state_check: StateCheck | None = None
        self.configure_error = ""  # why the last configure failed ("" when it did not)
        self._log_times: dict[str, float] = {}
        self.period = 0.0
        self._subs: list = []
        self._pubs: list = []
        self._control_timer = None
        self._autostart_timer = None
        self._diag_timer = None
        self._diag_pub = None
        self._active = False
        self._warm_input = None
        self._trigger_state = True
        self._output: CommandOutput | None = None
        self._last_refusal = ""
        self._reset_inputs()
        self._reset_stats()

    # ------------------------------------------------------------------ parameters
    def _p(self, name: str):
        return self.get_parameter(name).value

    def _reset_inputs(self) -> None:
        self._reading = None
        self._state_time: float | None = None  # perf_counter when the newest valid state arrived
        self._last_names: tuple[str, ...] | None = None
        self._goal: np.ndarray | None = None
        self._object_pos: np.ndarray | None = None
        self._object_quat: np.ndarray | None = None
        self._ticks = ControlClock(self.period)
        self._last_publish: float | None = None
        self._status = "inactive"

    def _reset_stats(self) -> None:
        self.loop_stats = loop_stats.LoopStats()
        self.counters = self.loop_stats.counters
        self._record = self.loop_stats.record

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as e:  # the reason goes to the log; the node stays unconfigured
            self.configure_error = str(e)
            self.get_logger().error(f"configure failed: {e}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.configure_error = ""
        return TransitionCallbackReturn.SUCCESS

    def _configure(self) -> None:
        from manip_rl.export.policy_file import load_policy  # torch is loaded only when configuring

        path = self._p("policy") or dds.default_policy_path()
        if not path:
            raise ValueError(
                "parameter 'policy' is empty and this build ships no policy file: pass "
                "-p policy:=/path/to/policy.pt (make one with `manip-rl export RUN --out X.pt`)"
            )
        if not Path(path).is_file():
            raise FileNotFoundError(f"policy file {path} does not exist (parameter 'policy')")
        bridge_params.check_choices(self._p)
        # Read once here, not per message: the control path does no parameter look-ups.
        self._trigger_state = self._p("trigger") == "state"
        import torch

        # One small MLP per step: a second intra-op thread only adds wake-up latency (measured
        # here: 62 us per forward pass with 1 thread, 1.7 ms with 2 on a loaded 2-core machine).
        torch.set_num_threads(1)
        try:
            robot = get_robot(str(self._p("robot")))
        except ValueError as e:
            raise ValueError(f"parameter 'robot': {e}") from None
        policy = load_policy(str(path))
        # Policy joints matched to the robot's by role; the tighter of the two limit sets.
        robot = profiles.serving_robot(self._p, robot, policy.action_spec)
        get = profiles.with_profile(self._p, robot)
        # Every limit below is the robot side's; the file can only narrow the joint limits.
        self.period = bridge_control_period(policy.control_period, float(self._p("control_rate")))
        self._ticks = ControlClock(self.period)
        warning = check_action_spec_for_robot(policy.action_spec, robot, self.period)
        if warning:
            self.get_logger().warning(f"policy file {path}: {warning}")
        self.policy = policy
        self.runner = PolicyRunner(self.policy, robot=robot)
        cfg = bridge_params.safety_config(self._p, robot, self.policy.action_spec, self.period)
        self.safety = SafetyFilter(
            cfg, profiles.motion_limits(get, robot, cfg.lower, cfg.upper, self.period)
        )
        self.state_check = StateCheck(
            bridge_params.plausibility_config(self._p, robot), self.runner.joint_map
        )
        self.runner.dry_run()

        # Depth 1: a bridge that fell behind takes the newest state, never a backlog of old ones.
        sensor_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        self._subs = [
            self.create_subscription(
                JointState, self._p("joint_states_topic"), self._on_joint_state, sensor_qos
            ),
            self.create_subscription(PointStamped, self._p("goal_topic"), self._on_goal, 10),
        ]
        if self.runner.needs_object:
            self._subs.append(
                self.create_subscription(
                    PoseStamped, self._p("object_pose_topic"), self._on_object_pose, sensor_qos
                )
            )
        self._output = CommandOutput(
            self,
            get,
            self.runner.joint_map.arm_joints,
            self.policy.action_spec.gripper,
            self.period,
        )
        self._pubs = self._output.publishers
        self._enable_srv = self.create_service(SetBool, "~/enable", self._on_enable)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(
            float(self._p("diagnostics_period")), self._publish_diagnostics
        )
        # First calls are slow; pay for them now, inactive, not in the control loop. The first
        # diagnostics message loads its type support (12 ms with the statistics, measured). The
        # statistics on real samples need their own warm-up, since the message above has none.
        self._publish_diagnostics()
        loop_stats.warm_up(self.period)
        # Move everything loaded so far (torch, the model, MuJoCo) out of the garbage collector's
        # reach: a full collection over it stalled the 500 Hz loop by more than a period.
        gc.collect()
        gc.freeze()
        cfg = self.safety.config
        self.get_logger().info(
            f"configured: {self.policy.task} policy {path} ({self.policy.action_spec.mode}, "
            f"{1 / self.period:g} Hz) on robot {robot.name}, joints "
            f"{list(self.runner.joint_map.required)}, limits {np.round(cfg.lower, 4).tolist()}.."
            f"{np.round(cfg.upper, 4).tolist()} rad, at most "
            f"{np.round(cfg.max_step / self.period, 3).tolist()} rad/s"
        )

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        reason = self.activation_problem()
        if reason:
            if reason != self._last_refusal:
                self.get_logger().error(f"refusing to activate: {reason}")
            self._last_refusal = reason
            return TransitionCallbackReturn.FAILURE
        self._last_refusal = ""
        self._control_timer = self.create_timer(self.period, self._on_timer)
        self._ticks.restart()
        self._warm_input = (
            np.zeros(self.policy.obs_dim, dtype=np.float32) if self._p("keep_warm") else None
        )
        self._active = True
        self._status = "active, disabled"
        self.get_logger().info(
            f"active at {1 / self.period:g} Hz (trigger {self._p('trigger')}, output "
            f"{self._output.kind}); call ~/enable to start commanding"
        )
        return super().on_activate(state)

    def activation_problem(self) -> str:
        """Why the bridge may not activate now ('' when it may)."""
        problem = bridge_params.control_rate_problem(float(self._p("control_rate")), self.period)
        if problem:
            return problem
        if self._last_names is None:
            return (
                f"no JointState received yet on {self._p('joint_states_topic')}; is the arm's "
                "joint_state_broadcaster (or sim_arm) running on this ROS_DOMAIN_ID?"
            )
        missing = self.runner.joint_map.missing(self._last_names)
        if missing:
            return (
                f"{self._p('joint_states_topic')} does not cover the policy's joints: missing "
                f"{missing}; it publishes {list(self._last_names)}. Remap the joint names so they "
                "match the policy's"
            )
        return ""

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control()
        self.get_logger().info("deactivated: commands stopped, the arm holds its last target")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control()
        self._release()
        self.get_logger().info("cleaned up: policy released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_control()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def _stop_control(self) -> None:
        self._active = False
        if self.safety is not None:
            self.safety.disable()
        if self._control_timer is not None:
            self.destroy_timer(self._control_timer)
            self._control_timer = None
        self._status = "inactive"

    def _release(self) -> None:
        for s in self._subs:
            self.destroy_subscription(s)
        for p in self._pubs:
            self.destroy_publisher(p)
        self._subs, self._pubs, self._output = [], [], None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        if getattr(self, "_enable_srv", None) is not None:
            self.destroy_service(self._enable_srv)
            self._enable_srv = None
        self.policy = self.runner = self.safety = self.state_check = None
        self._reset_inputs()

    # ------------------------------------------------------------------ autostart
    def start_autostart(self) -> bool:
        """Configure now, then try to activate every 0.5 s until the contract check passes.
        False when configuring failed (:attr:`configure_error` says why)."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        self._autostart_timer = self.create_timer(0.5, self._try_activate)
        return True

    def _try_activate(self) -> None:
        if self.trigger_activate() == TransitionCallbackReturn.SUCCESS:
            self.destroy_timer(self._autostart_timer)
            self._autostart_timer = None

    # ------------------------------------------------------------------ inputs
    def _log_throttled(self, key: str, message: str, period: float = 2.0) -> None:
        """An error line at most every ``period`` s per ``key`` (a bad stream at 500 Hz must not
        flood the log, and one kind of problem must not hide another)."""
        now = time.monotonic()
        if now - self._log_times.get(key, -math.inf) >= period:
            self._log_times[key] = now
            self.get_logger().error(message)

    def _on_joint_state(self, msg: JointState) -> None:
        now = time.perf_counter()
        self._last_names = tuple(msg.name)
        if self.state_check is None:
            return
        # Judged while inactive too: the reference reading stays current, and enabling is
        # refused while the newest state is implausible.
        try:
            verdict = self.state_check.check(msg.name, msg.position, msg.velocity, now)
        except JointStateError as e:
            if self._active:
                self.counters["rejected_joint_state"] += 1
                self._log_throttled("contract", f"joint state ignored: {e}")
            return
        if not verdict.ok:
            # Never build a command from it: the filter holds until a plausible state arrives.
            if verdict.status == HOLD_NONFINITE:
                self.counters["rejected_nonfinite"] += 1
                self._log_throttled(verdict.status, "joint state with NaN/inf ignored; holding")
            else:
                self.counters[f"rejected_{verdict.status.removeprefix('hold_')}"] += 1
                self._log_throttled(
                    verdict.status, f"joint state rejected ({verdict.status}): {verdict.detail}"
                )
            return
        if not self._active:
            return
        reading = verdict.reading
        self._ticks.state_arrived(now, self._state_time)
        self._reading, self._state_time = reading, now
        if self._trigger_state and self._ticks.due(now):
            self._control_step(now, from_state=True)
        elif self._warm_input is not None and self.safety.enabled:
            self.policy.act(self._warm_input)

    def _on_goal(self, msg: PointStamped) -> None:
        g = np.array([msg.point.x, msg.point.y, msg.point.z])
        if np.isfinite(g).all():
            self._goal = g
        else:
            self.counters["rejected_nonfinite"] += 1

    def _on_object_pose(self, msg: PoseStamped) -> None:
        p, o = msg.pose.position, msg.pose.orientation
        pos, quat = np.array([p.x, p.y, p.z]), np.array([o.w, o.x, o.y, o.z])
        if np.isfinite(pos).all() and np.isfinite(quat).all():
            self._object_pos, self._object_quat = pos, quat
        else:
            self.counters["rejected_nonfinite"] += 1

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response):
        if request.data:
            if not self._active:
                response.success = False
                response.message = "not active: configure and activate the node first"
                return response
            problem = self.state_check.problem
            if problem and not self.safety.enabled:  # (an enabled bridge is holding already)
                response.success = False
                response.message = (
                    f"refusing to enable: the newest joint state is implausible ({problem}: "
                    f"{self.state_check.detail}); enable again once "
                    f"{self._p('joint_states_topic')} reads plausibly"
                )
                self.get_logger().error(response.message)
                return response
            if not self.safety.enabled:
                self.safety.enable()
                self.runner.reset()
                self._last_publish = None  # the gap while disabled is no loop period
                self._ticks.restart()  # the loop starts afresh at the next state
                self.counters["enables"] += 1
            response.success = True
            response.message = f"enabled; ramping in over {self._p('ramp_in_time')} s"
        else:
            if self.safety is not None:
                self.safety.disable()
            response.success = True
            response.message = "disabled: no commands are sent"
        self.get_logger().info(response.message)
        return response

    # ------------------------------------------------------------------ control loop
    def _on_timer(self) -> None:
        now = time.perf_counter()
        if not self._trigger_state or self._ticks.next_deadline is None:
            self._control_step(now)
        elif self._ticks.missed_state(now):
            # No joint state arrived for this tick: step anyway (the watchdog may hold).
            self.counters["timer_steps"] += 1
            self._control_step(now)

    def _control_step(self, now: float, from_state: bool = False) -> None:
        late = self._ticks.tick(now, from_state)
        if late is not None and self.safety.enabled:  # a whole tick was missed while commanding
            self.counters["overruns"] += 1
            # When, and how late: the benchmark matches them against a stall probe.
            self.loop_stats.overrun_log.append((now, late))
        safety, runner = self.safety, self.runner
        if not safety.enabled:
            self._status = "active, disabled"
            return
        state_age = None if self._state_time is None else now - self._state_time
        targets = measured = gripper = None
        step = None
        problem = self.state_check.problem
        if self._reading is not None:
            measured = self._reading.position
        if problem:
            pass  # the newest state is implausible: no policy step, the filter holds
        elif (
            state_age is not None
            and state_age <= safety.config.state_timeout
            and self._inputs_ready()
        ):
            try:
                step = runner.step(self._reading, self._goal, self._object_pos, self._object_quat)
            except Exception as e:  # a failing policy must not take the node down: hold
                self.counters["policy_errors"] += 1
                self.get_logger().error(
                    f"policy step failed, holding: {e}", throttle_duration_sec=2.0
                )
            else:
                targets, gripper = step.targets, step.gripper
        elif state_age is not None and state_age <= safety.config.state_timeout:
            self._status = "waiting for goal/object pose"
            self.counters["waiting_inputs"] += 1
            return
        # The trajectory's stamp is the plan's start: now, after the policy step, not the state's
        # arrival, so the plan starts as close as possible to when the controller receives it.
        decision = safety.filter(
            targets, measured, state_age, gripper, problem or OK, now=time.perf_counter()
        )
        self._status = decision.status
        if decision.joints is None:
            return
        self._output.publish(decision.joints, decision.gripper, decision.plan)
        t_pub = time.perf_counter()
        self.counters["commands"] += 1
        if decision.status != OK:
            self.counters["holds"] += 1
        else:
            self._record("latency", t_pub - self._state_time)
            self._record("state_age", state_age)
            self._record("inference", step.inference_s)
            if decision.clamped:
                self.counters["clamped"] += 1
            if decision.rate_limited:
                self.counters["rate_limited"] += 1
        if self._last_publish is not None:
            self._record("period", t_pub - self._last_publish)
        self._last_publish = t_pub

    def _inputs_ready(self) -> bool:
        if self._goal is None:
            return False
        return not self.runner.needs_object or self._object_pos is not None

    # ------------------------------------------------------------------ diagnostics
    def summary(self, window: bool = True) -> dict[str, float]:
        """Loop statistics in ms (the diagnostics window, or the whole run)."""
        return self.loop_stats.summarize(self.period, window)

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None:
            return
        values = {**self.summary(), **dict(self.counters)}
        values["enabled"] = bool(self.safety is not None and self.safety.enabled)
        values["active"] = self._active
        values["control_period_ms"] = self.period * 1e3
        if self.state_check is not None and self.state_check.problem:
            values["state_problem"] = self.state_check.detail
        if self._state_time is not None:
            values["state_age_ms"] = (time.perf_counter() - self._state_time) * 1e3
        self._diag_pub.publish(
            loop_stats.diagnostic_array(
                f"{self.get_name()}: control loop",
                self._status,
                values,
                self.get_clock().now().to_msg(),
            )
        )

    def write_stats(self, path: str) -> None:
        """Every recorded sample (seconds) and the counters, as JSON."""
        data = self.loop_stats.to_json(self.period, self._p("trigger"))
        atomic_write_text(path, json.dumps(data))
