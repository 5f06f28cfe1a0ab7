"""One control step of policy_bridge and the inputs it is built from, ROS-free: joint states,
goal and object pose go in (each judged by its guard), a :class:`~.safety.Decision` comes out.

Every time here is seconds on one clock, the node's (ROS time under ``use_sim_time``): message
stamps are compared with it, never with arrival times on another clock (issue #16). The node
(:mod:`.policy_bridge`) owns the ROS side: subscriptions, timers, publishers.

A step, in order: the operator guard may lapse the enable (no heartbeat, run time up); an
implausible newest joint state, a stale one (by stamp), or a refused or stale goal or object
pose holds; else the policy steps and the safety filter bounds its targets; then the command's
TCP (forward kinematics) must lie in the workspace box, or the step is undone and held. Last,
with the trajectory output, a plan that is already more than a quarter of
``trajectory_timing_tolerance`` old when it is done (the process was descheduled: a loaded
machine) is planned again from the current time; if that one is late too, nothing is sent and
the previous plan, which ends at rest, goes on. The node checks the age once more just before
it writes the message, and takes the step back (:meth:`ControlCore.take_back`) if it is more
than half the tolerance old there (the other half is for the transport and the controller). A
plan that reached the controller after its tolerance would make the commanded motion jump (a
reflex on a Franka arm).
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from manip_rl.ros_bridge import operator_safety
from manip_rl.ros_bridge.operator_safety import HOLD_WORKSPACE, OperatorGuard
from manip_rl.ros_bridge.perception import InputGuard
from manip_rl.ros_bridge.plausibility import StateCheck
from manip_rl.ros_bridge.runner import JointStateError, PolicyRunner, Step
from manip_rl.ros_bridge.safety import HOLD_NONFINITE, HOLD_STALE, OK, Decision, SafetyFilter

Log = Callable[[str, str], None]  # (kind, message): a throttled error line per kind


class ControlCore:
    """The bridge's state between messages and its control step (see the module docstring).
    ``gripper``: a :class:`~.gripper.Gripper` or None; ``log``: throttled error lines."""

    def __init__(
        self,
        runner: PolicyRunner,
        safety: SafetyFilter,
        state_check: StateCheck,
        goal: InputGuard,
        obj: InputGuard,
        operator: OperatorGuard,
        gripper=None,
        grasp_opening: tuple[float, float] = (0.005, 0.07),
        counters: collections.Counter | None = None,
        log: Log = lambda kind, message: None,
    ) -> None:
        self.runner, self.safety, self.state_check = runner, safety, state_check
        self.goal, self.obj, self.operator, self.gripper = goal, obj, operator, gripper
        self.grasp_opening = grasp_opening
        self.counters = collections.Counter() if counters is None else counters
        self.log = log
        self.reset()

    def reset(self) -> None:
        """Forget every reading (the node was deactivated or cleaned up)."""
        self.reading = None
        self.state_stamp: float | None = None  # header stamp of the newest accepted state
        self.status = "inactive"
        self._saved = None  # the filter before the last step (with motion limits): take_back
        self.lapse_detail = ""
        self.goal.reset()
        self.obj.reset()

    # ------------------------------------------------------------------ inputs
    def refused(self, status: str, detail: str) -> None:
        """Count and log (throttled, per kind) an input refused with hold status ``status``."""
        kind = "nonfinite" if status == HOLD_NONFINITE else status.removeprefix("hold_")
        self.counters[f"rejected_{kind}"] += 1
        self.log(status, f"{detail}; holding")

    def joint_state(self, names, position, velocity, stamp: float, now: float, active: bool):
        """Judge a JointState stamped ``stamp``, received at ``now``; the reading when accepted
        (and the bridge is ``active``), else None."""
        try:
            verdict = self.state_check.check(names, position, velocity, stamp, now)
        except JointStateError as e:
            if active:
                self.counters["rejected_joint_state"] += 1
                self.log("contract", f"joint state ignored: {e}")
            return None
        if not verdict.ok:
            # Never build a command from it: the filter holds until a plausible state arrives.
            if verdict.status == HOLD_NONFINITE:
                self.refused(verdict.status, "joint state with NaN/inf ignored")
            else:
                self.refused(
                    verdict.status, f"joint state rejected ({verdict.status}): {verdict.detail}"
                )
            return None
        if active:
            self.reading, self.state_stamp = verdict.reading, stamp
        return verdict.reading

    def offer(self, guard: InputGuard, stamp: float, frame: str, position, quat, now: float):
        """A goal or object pose message (``guard``: :attr:`goal` or :attr:`obj`); the jump
        bound applies while commanding."""
        status = guard.offer(stamp, frame, position, quat, now, self.safety.enabled)
        if status != OK:
            self.refused(status, guard.detail)

    def enable_refusal(self, now: float, joint_topic: str = "/joint_states") -> str:
        """Why an enable must be refused now ('' when it may)."""
        refusal = self.operator.enable_problem(now)
        if refusal:
            return refusal
        if self.state_check.problem:
            return (
                f"refusing to enable: the newest joint state is implausible "
                f"({self.state_check.problem}: {self.state_check.detail}); enable again once "
                f"{joint_topic} reads plausibly"
            )
        return ""

    def enable(self, now: float) -> None:
        self.safety.enable()
        self.operator.enabled(now)
        self.runner.reset()
        if self.gripper is not None:
            self.gripper.reset()  # the first command sets the gripper's state

    def disable(self) -> None:
        self.safety.disable()
        self.operator.disabled()

    # ------------------------------------------------------------------ the step
    def step(
        self, now: float, plan_clock: Callable[[], float] | None = None
    ) -> tuple[Decision | None, Step | None, float | None]:
        """One control step at ``now``: (the decision, None when nothing is to be sent; the
        policy step it came from, if any; the state's age). ``plan_clock``: read once after the
        policy step, the time a trajectory plan starts (the filter's ``now``; needed with motion
        limits)."""
        safety, runner = self.safety, self.runner
        if not safety.enabled:
            self.status = "active, disabled"
            return None, None, None
        lapse = self.operator.lapse(now)
        if lapse:  # no heartbeat, or the run time is up: the enable lapses, as ~/enable false
            self.disable()
            self.counters[f"lapsed_{lapse}"] += 1
            self.status, self.lapse_detail = f"disabled: {lapse}", self.operator.detail
            return None, None, None
        state_age = None if self.state_stamp is None else now - self.state_stamp
        targets = measured = gripper = step = None
        problem = self.state_check.problem
        if self.reading is not None:
            measured = self.reading.position
        if not problem and state_age is not None and state_age <= safety.config.state_timeout:
            inputs, status = self._task_inputs(now)
            if not status:
                self.status = "waiting for goal/object pose"
                self.counters["waiting_inputs"] += 1
                return None, None, state_age
            if status != OK:
                problem = status  # a refused or stale goal / object pose: hold
                self.log(f"{status}-step", f"{self.input_detail()}; holding")
            else:
                try:
                    step = runner.step(self.reading, *inputs)
                except Exception as e:  # a failing policy must not take the node down: hold
                    self.counters["policy_errors"] += 1
                    self.log("policy", f"policy step failed, holding: {e}")
                else:
                    targets, gripper = step.targets, step.gripper
        box = self.operator.config.has_box and targets is not None
        timed = plan_clock is not None and safety.motion is not None
        saved = operator_safety.snapshot(safety) if box or timed else None
        self._saved = saved if timed else None
        for attempt in range(2):
            plan_now = None if plan_clock is None else plan_clock()
            decision, outside = self._filter(
                targets, measured, state_age, gripper, problem, plan_now, saved
            )
            if not timed or decision.plan is None:
                break
            late = plan_clock() - plan_now
            if late <= safety.motion.timing_tolerance / 4:
                break
            operator_safety.restore(safety, saved)  # as if this step never ran
            self.counters["late_plans"] += 1
            if attempt == 1:
                self._not_sent(
                    f"two plans in a row were {late * 1e3:.1f} ms old when done (more than a "
                    "quarter of trajectory_timing_tolerance)"
                )
                return None, step, state_age
        if outside:  # counted once, for the attempt that is sent
            self.refused(HOLD_WORKSPACE, outside)
        if decision.status == HOLD_STALE and state_age is not None:
            self.log(
                HOLD_STALE,
                f"the newest joint state is {state_age:.3f} s old by its stamp (state_timeout "
                f"{safety.config.state_timeout:g} s); holding",
            )
        self.status = decision.status
        if decision.joints is None:
            return None, step, state_age
        if self.gripper is not None and decision.status == OK and decision.gripper is not None:
            self.gripper.command(decision.gripper, now)
        return decision, step, state_age

    @property
    def max_plan_age(self) -> float | None:
        """How old (s) a trajectory plan may be when it is written: half the timing tolerance,
        the other half left for the transport and the controller (None without motion limits).
        """
        motion = self.safety.motion
        return None if motion is None else motion.timing_tolerance / 2

    def take_back(self, age: float) -> None:
        """The step's plan was found ``age`` s old when about to be written: it is not sent.
        The filter forgets the step, and the previous plan (which ends at rest) goes on."""
        if self._saved is not None:
            operator_safety.restore(self.safety, self._saved)
        self.counters["late_plans"] += 1
        self._not_sent(
            f"a plan was {age * 1e3:.1f} ms old when about to be written (more than half of "
            "trajectory_timing_tolerance)"
        )

    def _not_sent(self, why: str) -> None:
        self.counters["late_plans_dropped"] += 1
        self.status = "late plan: not sent"
        self.log(
            "late-plan",
            f"{why}, {self.safety.motion.timing_tolerance:g} s: not sending; the previous plan "
            "goes on to rest. Is the machine overloaded?",
        )

    def _filter(
        self, targets, measured, state_age, gripper, problem, plan_now, saved
    ) -> tuple[Decision, str]:
        """The safety filter's decision, then the workspace box (undone and held outside it);
        and why the command was outside the box ('' when it was not)."""
        safety = self.safety
        outside = ""
        decision = safety.filter(targets, measured, state_age, gripper, problem or OK, now=plan_now)
        if self.operator.config.has_box and targets is not None and decision.status == OK:
            # After the filter, on the joints to be sent (either action mode): FK of the command.
            kinematics = self.runner.kinematics
            outside = self.operator.outside_workspace(kinematics.ee_pos(decision.joints))
            if outside:
                operator_safety.restore(safety, saved)  # as if this step never ran
                # A hold through the whole filter: with motion limits it brakes along a plan.
                decision = safety.filter(
                    None, measured, state_age, None, HOLD_WORKSPACE, now=plan_now
                )
        return decision, outside

    def _task_inputs(self, now: float) -> tuple[tuple, str]:
        """(goal, object position, object quaternion) and ``OK``; or ``''`` while one has not
        arrived yet, or the hold status of a refused or stale one."""
        status, _ = self.goal.current(now)
        if status != OK:
            return (), status
        if not self.runner.needs_object:
            return (self.goal.position, None, None), OK
        opening = None if self.reading is None else self.reading.gripper_opening
        # Fingers commanded closed that stopped apart (not shut, not still open) hold the cube,
        # which may hide it from the camera.
        closed = self.gripper is not None and self.gripper.closed and opening is not None
        low, high = self.grasp_opening
        grasped = bool(closed and low <= opening <= high)
        status, occluded = self.obj.current(now, grasped)
        if status != OK:
            return (), status
        if occluded:
            self.counters["occluded_object_steps"] += 1
        return (self.goal.position, self.obj.position, self.obj.quat), OK

    def input_detail(self) -> str:
        """What is wrong with the goal / object pose ('' when nothing)."""
        return " / ".join(g.detail for g in (self.goal, self.obj) if g.detail)
