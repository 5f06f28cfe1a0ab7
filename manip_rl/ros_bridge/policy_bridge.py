"""``policy_bridge``: a ROS 2 lifecycle node that serves an exported policy file to an arm.

Lifecycle (``ros2 lifecycle set /policy_bridge configure|activate|deactivate|cleanup``, or the
``autostart`` parameter): **configure** loads and validates the policy file and creates the
subscriptions and publishers; **activate** checks the contract (``/joint_states`` names every
joint the policy needs, the configured rate matches the policy's control period) and starts the
control loop, refusing with a log line that says why; **deactivate** stops commanding (the arm
holds its last target); **cleanup** releases the policy.

Even when active the bridge sends nothing until ``~/enable`` (``std_srvs/SetBool``) arms the
safety filter (:mod:`manip_rl.ros_bridge.safety`). Inputs: ``/joint_states`` (matched by joint
name, aged by header stamp), ``~/goal`` (``geometry_msgs/PointStamped``), ``~/object_pose``
(``PoseStamped``, push and pick-and-place), each judged for stamp, frame and jumps
(:mod:`.perception`), and ``~/heartbeat`` (``std_msgs/Bool``, :mod:`.operator_safety`). Outputs:
``std_msgs/Float64MultiArray`` on ``/forward_position_controller/commands`` or
``trajectory_msgs/JointTrajectory`` on ``/joint_trajectory_controller/joint_trajectory``
(parameter ``output``), the gripper by topic or ``GripperCommand`` action (:mod:`.gripper`), and
``/diagnostics``. Every age and timer is on the node clock (``use_sim_time`` works). See
docs/ros2.md.

Control steps run on the arrival of the first joint state at or after each tick of the control
period (``trigger: state``, the way a ros2_control controller updates right after the hardware
read), so a command leaves within the policy's inference time of the state it was built from; a
timer at the control period catches missing states and holds. ``trigger: timer`` runs steps on
the timer alone.

The node is this module; its control step and guards are in :mod:`.control_core` (ROS-free),
its parameters and limits in :mod:`.bridge_params` and :mod:`.guard_params`, its loop
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
from std_msgs.msg import Bool
from std_srvs.srv import SetBool

from manip_rl.fileio import atomic_write_text
from manip_rl.robots import get_robot
from manip_rl.ros_bridge import (
    bridge_params,
    dds,
    guard_params,
    loop_stats,
    operator_safety,
    profiles,
)
from manip_rl.ros_bridge.bridge_cli import add_arguments, ros_arguments, run
from manip_rl.ros_bridge.bridge_params import RATE_TOLERANCE
from manip_rl.ros_bridge.commands import CommandOutput
from manip_rl.ros_bridge.control_clock import ControlClock
from manip_rl.ros_bridge.control_core import ControlCore
from manip_rl.ros_bridge.gripper import make_gripper
from manip_rl.ros_bridge.operator_safety import OperatorGuard
from manip_rl.ros_bridge.perception import InputGuard, stamp_seconds
from manip_rl.ros_bridge.plausibility import StateCheck
from manip_rl.ros_bridge.runner import PolicyRunner
from manip_rl.ros_bridge.safety import (
    OK,
    SafetyFilter,
    bridge_control_period,
    check_action_spec_for_robot,
)

NODE_NAME = "policy_bridge"
# Every parameter the node declares: the loop's and the guards' (issue #16).
PARAMETERS: dict[str, object] = {**bridge_params.PARAMETERS, **guard_params.PARAMETERS}
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
        self.core: ControlCore | None = None  # the guards and the step, ROS-free
        self.gripper = None
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

    def _now(self) -> float:
        """The node clock in s: every age and deadline is on it (ROS time with use_sim_time)."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _reset_inputs(self) -> None:
        self._state_now = None  # node clock when the newest valid state arrived (for the ticks)
        self._state_arrival = 0.0  # perf_counter when it arrived (for the latency statistics)
        self._last_names: tuple[str, ...] | None = None
        if self.core is not None:
            self.core.reset()
        self._ticks = ControlClock(self.period)
        self._last_publish: float | None = None

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
        guard_params.check_choices(self._p)
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
            guard_params.plausibility_config(self._p, robot), self.runner.joint_map
        )
        goal_config, object_config = guard_params.perception_configs(self._p, robot)
        operator = OperatorGuard(guard_params.operator_config(self._p, robot))
        self.runner.dry_run()
        # The workspace check's first forward kinematics and filter copy: paid here, not live.
        operator.outside_workspace(self.runner.kinematics.ee_pos(self.runner.spec.home))
        operator_safety.snapshot(self.safety)

        # Depth 1: a bridge that fell behind takes the newest state, never a backlog of old ones.
        sensor_qos = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        self._subs = [
            self.create_subscription(
                JointState, self._p("joint_states_topic"), self._on_joint_state, sensor_qos
            ),
            self.create_subscription(PointStamped, self._p("goal_topic"), self._on_goal, 10),
            self.create_subscription(Bool, self._p("heartbeat_topic"), self._on_heartbeat, 10),
        ]
        if self.runner.needs_object:
            self._subs.append(
                self.create_subscription(
                    PoseStamped, self._p("object_pose_topic"), self._on_object_pose, sensor_qos
                )
            )
        # The gripper has its own path (manip_rl.ros_bridge.gripper), not the arm's stream.
        self._output = CommandOutput(
            self, get, self.runner.joint_map.arm_joints, False, self.period
        )
        self._pubs = self._output.publishers
        if self.policy.action_spec.gripper:
            self.gripper = make_gripper(
                self,
                guard_params.gripper_config(self._p),
                str(self._p("gripper_backend")),
                self._p("gripper_topic"),
                self._p("gripper_action"),
                lambda message: self._log_throttled("gripper", message),
            )
        self.core = ControlCore(
            self.runner,
            self.safety,
            self.state_check,
            InputGuard("goal", goal_config),
            InputGuard("object pose", object_config),
            operator,
            self.gripper,
            (float(self._p("grasp_min_opening")), float(self._p("grasp_max_opening"))),
            self.counters,
            self._log_throttled,
        )
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
        self.core.status = "active, disabled"
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
        if self.core is not None:
            self.core.disable()
            self.core.status = "inactive"
        if self._control_timer is not None:
            self.destroy_timer(self._control_timer)
            self._control_timer = None

    def _release(self) -> None:
        for s in self._subs:
            self.destroy_subscription(s)
        for p in self._pubs:
            self.destroy_publisher(p)
        self._subs, self._pubs, self._output = [], [], None
        if self.gripper is not None:
            self.gripper.backend.close(self)
            self.gripper = None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None
        if getattr(self, "_enable_srv", None) is not None:
            self.destroy_service(self._enable_srv)
            self._enable_srv = None
        self._reset_inputs()
        self.policy = self.runner = self.safety = self.state_check = self.core = None

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
        arrival, now = time.perf_counter(), self._now()
        self._last_names = tuple(msg.name)
        if self.core is None:
            return
        # Judged while inactive too: the reference reading stays current, and enabling is
        # refused while the newest state is implausible. Its time is its stamp (issue #16).
        stamp = stamp_seconds(msg.header.stamp)
        args = (msg.name, msg.position, msg.velocity, stamp, now, self._active)
        if self.core.joint_state(*args) is None or not self._active:
            return
        self._ticks.state_arrived(now, self._state_now)
        self._state_now, self._state_arrival = now, arrival
        if self._trigger_state and self._ticks.due(now):
            self._control_step(now, from_state=True)
        elif self._warm_input is not None and self.safety.enabled:
            self.runner.warm(self._warm_input)  # a stateful policy's memory stays put

    def _offer(self, guard_name: str, msg, position, quat) -> None:
        if self.core is not None:
            guard = getattr(self.core, guard_name)
            stamp, frame = stamp_seconds(msg.header.stamp), msg.header.frame_id
            self.core.offer(guard, stamp, frame, position, quat, self._now())

    def _on_goal(self, msg: PointStamped) -> None:
        self._offer("goal", msg, (msg.point.x, msg.point.y, msg.point.z), None)

    def _on_object_pose(self, msg: PoseStamped) -> None:
        p, o = msg.pose.position, msg.pose.orientation
        self._offer("obj", msg, (p.x, p.y, p.z), (o.w, o.x, o.y, o.z))

    def _on_heartbeat(self, msg: Bool) -> None:
        if self.core is not None:
            self.core.operator.heartbeat(self._now(), bool(msg.data))

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response):
        response.success = True
        if request.data:
            if not self._active:
                response.success = False
                response.message = "not active: configure and activate the node first"
                return response
            if not self.safety.enabled:  # (an enabled bridge that holds stays enabled)
                refusal = self.core.enable_refusal(self._now(), self._p("joint_states_topic"))
                if refusal:
                    response.success, response.message = False, refusal
                    self.get_logger().error(refusal)
                    return response
                self.core.enable(self._now())
                self._last_publish = None  # the gap while disabled is no loop period
                self._ticks.restart()  # the loop starts afresh at the next state
                self.counters["enables"] += 1
            response.message = f"enabled; ramping in over {self._p('ramp_in_time')} s"
        else:
            if self.core is not None:
                self.core.disable()
            response.message = "disabled: no commands are sent"
        self.get_logger().info(response.message)
        return response

    # ------------------------------------------------------------------ control loop
    def _on_timer(self) -> None:
        now = self._now()
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
        # The trajectory's stamp is the plan's start, taken after the policy step (not at the state's
        # arrival), so the plan starts as close as possible to when the controller receives it.
        decision, step, state_age = self.core.step(now, plan_clock=self._output.plan_clock)
        if self.core.lapse_detail:
            self.get_logger().error(self.core.lapse_detail)
            self.core.lapse_detail = ""
        if decision is None:
            return
        late = self._output.publish(decision.joints, None, decision.plan, self.core.max_plan_age)
        if late is not None:  # descheduled before the write: not sent, the step taken back
            self.core.take_back(late)
            return
        t_pub = time.perf_counter()
        self.counters["commands"] += 1
        if decision.status != OK:
            self.counters["holds"] += 1
        else:
            self._record("latency", t_pub - self._state_arrival)
            self._record("state_age", state_age)
            self._record("inference", step.inference_s)
            if decision.clamped:
                self.counters["clamped"] += 1
            if decision.rate_limited:
                self.counters["rate_limited"] += 1
        if self._last_publish is not None:
            self._record("period", t_pub - self._last_publish)
        self._last_publish = t_pub

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
        if self.core is not None and self.core.input_detail():
            values["input_problem"] = self.core.input_detail()
        if self.core is not None and self.core.state_stamp is not None:
            values["state_age_ms"] = (self._now() - self.core.state_stamp) * 1e3
        self._diag_pub.publish(
            loop_stats.diagnostic_array(
                f"{self.get_name()}: control loop",
                (self.core.status if self.core else "inactive"),
                values,
                self.get_clock().now().to_msg(),
            )
        )

    def write_stats(self, path: str) -> None:
        """Every recorded sample (seconds) and the counters, as JSON."""
        data = self.loop_stats.to_json(self.period, self._p("trigger"))
        atomic_write_text(path, json.dumps(data))
