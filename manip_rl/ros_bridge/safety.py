"""The safety filter between a policy's joint targets and the arm: ROS-free and unit-tested.

Every command the bridge publishes passes through :class:`SafetyFilter`, which applies, in order:

1. **Enable gate.** The filter starts disabled and builds no command until :meth:`enable`.
2. **Implausible-state hold.** While the newest joint state failed the plausibility check
   (:mod:`manip_rl.ros_bridge.plausibility`: a joint named twice, outside the robot's limits, or a
   jump faster than the arm can move), the filter holds and builds nothing from it.
3. **Stale-state watchdog.** If the newest valid joint state is older than ``state_timeout``, the
   filter holds: it repeats the last command it sent (the arm stays where it was told to be) and
   builds nothing from the old state.
4. **Non-finite guard.** A target, measured position or gripper value that is NaN or infinite is
   never passed on; the filter holds instead.
5. **Rate limit with ramp-in.** Each joint's command changes by at most ``max_step`` rad per
   control step from the previous command (from the measured position on the first step after
   enabling). For ``ramp_time`` seconds after enabling that allowance grows linearly from
   ``1/n`` of ``max_step`` to all of it, so the arm eases into policy control.
6. **Joint-limit clamp.** Commands are clamped into ``[lower, upper]``.
7. **Motion limits** (trajectory output, when the filter has :class:`~manip_rl.robots.motion.
   MotionLimits`): the clamped command becomes the target of a cubic plan
   (:class:`~manip_rl.robots.motion.MotionLimiter`) whose velocity, acceleration and jerk stay
   inside the robot's limits with margins, and which ends at rest; the decision carries it
   (``plan``) and its first point (``joints``). Holds go through it too, so a hold brakes
   smoothly instead of stepping the velocity to zero.

The limits come from the robot side (:meth:`SafetyConfig.for_robot`): the robot description's
joint limits intersected with the policy file's (a file can only narrow them), tightened by a
margin; the per-step change from the bridge's own speed limit and control period, capped at
``COMMAND_SPEED_FACTOR`` times the robot's datasheet velocity.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from manip_rl.policy_io import GRIPPER_MAX_OPENING, ActionSpec
from manip_rl.robots import RobotDescription
from manip_rl.robots.motion import MotionLimiter, MotionLimits, TrajectoryPlan

# Status strings of a decision, also published in /diagnostics.
DISABLED = "disabled"
NO_STATE = "no_state"
HOLD_STALE = "hold_stale_state"
HOLD_NONFINITE = "hold_nonfinite_input"
# The newest joint state failed the plausibility check (manip_rl.ros_bridge.plausibility).
HOLD_DUPLICATE_NAMES = "hold_duplicate_joint_names"
HOLD_OUTSIDE_LIMITS = "hold_state_outside_limits"
HOLD_STATE_JUMP = "hold_state_jump"
HOLD_STATUSES = (
    HOLD_STALE,
    HOLD_NONFINITE,
    HOLD_DUPLICATE_NAMES,
    HOLD_OUTSIDE_LIMITS,
    HOLD_STATE_JUMP,
)
OK = "ok"

# A command may lead the arm (a position target is where the arm should be, not where it is),
# but a per-step change above this many times the datasheet's joint velocity is no command an
# arm can follow: it caps max_joint_speed whatever a parameter file says. The simulated demo's
# 6 rad/s (launch/config/sim.yaml) is under it for every Panda joint (3 x 2.175 rad/s).
COMMAND_SPEED_FACTOR = 3.0
# Control periods a policy file may state (s): 1 kHz (the Franka's own loop) to 5 Hz.
PLAUSIBLE_CONTROL_PERIOD = (0.001, 0.2)
# Largest joint_delta step a policy file may state (rad per step for a full action; the shipped
# policies use 0.1). Not period-bound: bench/ros_loop.py serves the 25 Hz policy at 500 Hz.
MAX_JOINT_SCALE = 1.0


@dataclasses.dataclass(frozen=True)
class SafetyConfig:
    """Limits of the safety filter (all in the robot's joint convention).

    ``lower``/``upper``: joint limits in rad; ``max_step``: largest change of a joint command per
    control step in rad (one number, or one per joint); ``control_period`` in s; ``ramp_time``: seconds after enabling over which
    the step allowance grows to ``max_step`` (0 disables the ramp); ``state_timeout``: oldest joint
    state (s) a command may be built from.
    """

    lower: np.ndarray
    upper: np.ndarray
    max_step: float | np.ndarray
    control_period: float
    ramp_time: float = 1.0
    state_timeout: float = 0.1
    gripper_max: float = GRIPPER_MAX_OPENING

    def __post_init__(self) -> None:
        lower = np.asarray(self.lower, dtype=np.float64)
        upper = np.asarray(self.upper, dtype=np.float64)
        object.__setattr__(self, "lower", lower)
        object.__setattr__(self, "upper", upper)
        if lower.shape != upper.shape or lower.ndim != 1:
            raise ValueError(f"joint limits: lower {lower.shape} and upper {upper.shape} differ")
        if not (np.isfinite(lower).all() and np.isfinite(upper).all()):
            raise ValueError("joint limits must be finite numbers")
        if (lower >= upper).any():
            bad = np.flatnonzero(lower >= upper).tolist()
            raise ValueError(
                f"joint limits are empty for joint index(es) {bad}: lower >= upper; a limit margin "
                "that large leaves no room to move, use a smaller joint_limit_margin"
            )
        max_step = np.asarray(self.max_step, dtype=np.float64)
        if max_step.ndim == 0:
            max_step = np.full(lower.shape, float(max_step))
        if max_step.shape != lower.shape or not (np.isfinite(max_step) & (max_step > 0)).all():
            raise ValueError(f"safety max_step must be positive numbers, got {self.max_step!r}")
        object.__setattr__(self, "max_step", max_step)
        value = self.control_period
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"safety control_period must be a positive number, got {value!r}")
        for name in ("ramp_time", "state_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"safety {name} must be >= 0 seconds, got {value!r}")
        if self.state_timeout == 0:
            raise ValueError("safety state_timeout must be > 0 seconds")

    @classmethod
    def for_robot(
        cls,
        robot: RobotDescription,
        spec: ActionSpec,
        control_period: float,
        max_joint_speed: float = 2.0,
        limit_margin: float = 0.0,
        ramp_time: float = 1.0,
        state_timeout: float = 0.1,
    ) -> SafetyConfig:
        """Limits that no policy file can widen: ``robot``'s joint limits intersected with the
        action spec's, tightened by ``limit_margin`` rad; the per-step change from
        ``max_joint_speed`` (rad/s) x the bridge's ``control_period``, capped per joint at
        ``COMMAND_SPEED_FACTOR`` x the robot's velocity limit; the robot's gripper range."""
        if not (math.isfinite(limit_margin) and limit_margin >= 0):
            raise ValueError(f"joint_limit_margin must be >= 0 rad, got {limit_margin!r}")
        if not (math.isfinite(max_joint_speed) and max_joint_speed > 0):
            raise ValueError(f"max_joint_speed must be > 0 rad/s, got {max_joint_speed!r}")
        file_lower = np.asarray(spec.lower, dtype=np.float64).reshape(-1)
        file_upper = np.asarray(spec.upper, dtype=np.float64).reshape(-1)
        if file_lower.shape != (robot.dof,) or file_upper.shape != (robot.dof,):
            raise ValueError(
                f"the policy file's action limits have {file_lower.size}/{file_upper.size} "
                f"values; robot {robot.name!r} has {robot.dof} joints (action.lower/upper)"
            )
        # fmax/fmin: a NaN in the file leaves the robot's limit in place.
        lower = np.fmax(robot.lower, file_lower) + limit_margin
        upper = np.fmin(robot.upper, file_upper) - limit_margin
        speed = np.minimum(float(max_joint_speed), COMMAND_SPEED_FACTOR * robot.velocity)
        return cls(
            lower=lower,
            upper=upper,
            max_step=speed * float(control_period),
            control_period=float(control_period),
            ramp_time=float(ramp_time),
            state_timeout=float(state_timeout),
            gripper_max=float(robot.gripper_max_opening),
        )

    @property
    def ramp_steps(self) -> int:
        """Control steps the ramp-in lasts (at least 1)."""
        return max(1, math.ceil(self.ramp_time / self.control_period - 1e-9))


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the filter let through: ``joints`` (None: publish nothing), ``gripper`` (None: no
    gripper command), a ``status`` string, and whether the clamp or the rate limit acted. With
    motion limits, ``plan`` is the trajectory to send (``joints``: its point one period ahead)."""

    joints: np.ndarray | None
    gripper: float | None
    status: str
    clamped: bool = False
    rate_limited: bool = False
    plan: TrajectoryPlan | None = None

    @property
    def holding(self) -> bool:
        return self.status in HOLD_STATUSES


class SafetyFilter:
    """Stateful filter; call :meth:`filter` once per control step with the policy's targets."""

    def __init__(self, config: SafetyConfig, motion: MotionLimits | None = None) -> None:
        self.config = config
        self.motion = motion
        self._limiter = None if motion is None else MotionLimiter(motion)
        self._enabled = False
        self._steps_since_enable = 0
        self._last_joints: np.ndarray | None = None
        self._last_gripper: float | None = None

    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def last_command(self) -> np.ndarray | None:
        return None if self._last_joints is None else self._last_joints.copy()

    def enable(self) -> None:
        """Arm the filter; the next command is rate-limited from the measured position and the
        ramp-in starts. Enabling an enabled filter changes nothing."""
        if self._enabled:
            return
        self._enabled = True
        self._steps_since_enable = 0
        self._last_joints = None
        self._last_gripper = None
        if self._limiter is not None:
            self._limiter.reset()  # the first plan starts at rest at the measured position

    def disable(self) -> None:
        self._enabled = False
        self._last_joints = None
        self._last_gripper = None
        if self._limiter is not None:
            self._limiter.reset()

    def hold(self, status: str = HOLD_STALE) -> Decision:
        """The hold command: the last command sent, or nothing when none was sent yet."""
        if not self._enabled:
            return Decision(None, None, DISABLED)
        if self._last_joints is None:
            return Decision(None, None, status)
        return Decision(self._last_joints.copy(), self._last_gripper, status)

    def filter(
        self,
        targets: np.ndarray | None,
        measured: np.ndarray | None,
        state_age: float | None,
        gripper: float | None = None,
        state_status: str = OK,
        now: float | None = None,
    ) -> Decision:
        """Filter one control step.

        ``targets``: the policy's joint targets (rad); ``measured``: the joint positions they were
        built from; ``state_age``: seconds since that joint state arrived (None: no state yet);
        ``gripper``: the commanded opening in m, or None; ``state_status``: the plausibility
        check's verdict on the newest joint state (anything but ``OK`` holds); ``now``: the time
        (s) the command will be stamped with, needed with motion limits.
        """
        decision = self._filter_positions(targets, measured, state_age, gripper, state_status)
        if self._limiter is None or decision.joints is None:
            return decision
        if now is None or not math.isfinite(now):
            raise ValueError("a safety filter with motion limits needs the command time (now)")
        ok = measured is not None and np.isfinite(np.asarray(measured, dtype=np.float64)).all()
        start = measured if ok else decision.joints
        plan = self._limiter.plan_step(decision.joints, float(now), start)
        ahead = plan.state_at(float(now) + self.motion.period)[0]  # one control period on
        return dataclasses.replace(decision, joints=ahead, plan=plan)

    def _filter_positions(
        self,
        targets: np.ndarray | None,
        measured: np.ndarray | None,
        state_age: float | None,
        gripper: float | None,
        state_status: str,
    ) -> Decision:
        cfg = self.config
        if not self._enabled:
            return Decision(None, None, DISABLED)
        if state_status != OK:
            return self.hold(state_status)
        if state_age is None or measured is None:
            return self.hold(NO_STATE)
        if not (math.isfinite(state_age) and state_age <= cfg.state_timeout):
            return self.hold(HOLD_STALE)
        if targets is None:
            return self.hold(HOLD_NONFINITE)
        targets = np.asarray(targets, dtype=np.float64)
        measured = np.asarray(measured, dtype=np.float64)
        if targets.shape != cfg.lower.shape or measured.shape != cfg.lower.shape:
            raise ValueError(
                f"safety filter got targets {targets.shape} and measured {measured.shape}; "
                f"the limits have {cfg.lower.shape}"
            )
        if not (np.isfinite(targets).all() and np.isfinite(measured).all()):
            return self.hold(HOLD_NONFINITE)
        if gripper is not None and not math.isfinite(gripper):
            return self.hold(HOLD_NONFINITE)

        self._steps_since_enable += 1
        ramp = min(1.0, self._steps_since_enable / cfg.ramp_steps) if cfg.ramp_time > 0 else 1.0
        allowance = cfg.max_step * ramp
        reference = self._last_joints if self._last_joints is not None else measured
        delta = targets - reference
        limited = np.clip(delta, -allowance, allowance)
        command = reference + limited
        clamped_command = np.minimum(np.maximum(command, cfg.lower), cfg.upper)
        rate_limited = bool((limited != delta).any())
        clamped = bool((clamped_command != command).any())

        gripper_cmd = None
        if gripper is not None:
            gripper_cmd = min(max(float(gripper), 0.0), cfg.gripper_max)
            clamped = clamped or gripper_cmd != gripper
        self._last_joints = clamped_command
        self._last_gripper = gripper_cmd
        return Decision(clamped_command.copy(), gripper_cmd, OK, clamped, rate_limited)


def bridge_control_period(file_period: float, control_rate: float) -> float:
    """The bridge's own control period (s): ``1 / control_rate`` when that is set (Hz), else the
    policy file's ``control_period_s``. Either way the file's value must be plausible
    (``PLAUSIBLE_CONTROL_PERIOD``) and agree with the bridge's within 1%, or ValueError: the
    rate limit is computed per period, so a file must not be able to stretch it."""
    lo, hi = PLAUSIBLE_CONTROL_PERIOD
    period = float(file_period)
    if not (math.isfinite(period) and lo <= period <= hi):
        raise ValueError(
            f"the policy file's control_period_s is {file_period!r} s, outside the plausible "
            f"{lo:g}..{hi:g} s; the file is damaged or edited, export the policy again"
        )
    rate = float(control_rate)
    if not (math.isfinite(rate) and rate >= 0):
        raise ValueError(f"parameter control_rate={rate!r} must be >= 0 Hz (0 = the policy's)")
    if rate == 0:
        return period
    own = 1.0 / rate
    if abs(own - period) > 0.01 * period:
        raise ValueError(
            f"control_rate={rate:g} Hz ({own * 1e3:g} ms) disagrees with the policy's "
            f"control_period_s {period * 1e3:g} ms: the policy was trained at that period; set "
            "control_rate to 0 or to the policy's rate"
        )
    return own


def check_action_spec_for_robot(spec: ActionSpec, robot: RobotDescription, period: float) -> str:
    """Refuse (ValueError naming the field) an action spec the robot cannot be driven by: joint
    names that repeat, a joint count other than the robot's, the robot's joints in another order,
    non-finite joint limits, a home pose outside the robot's limits, or a ``joint_scale_rad`` that is not a number in
    (0, ``MAX_JOINT_SCALE``]. Returns a warning
    ('' for none) when a full action asks for more than the command speed cap (the rate limit
    then binds, as it does whatever the file says)."""
    names = tuple(spec.joint_names)
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(
            f"the policy file's action.joint_names repeat {twice} ({list(names)}); each joint "
            "must be named once. The file is damaged or edited, export the policy again"
        )
    if len(names) != robot.dof:
        raise ValueError(
            f"the policy file's action.joint_names has {len(names)} joints, robot "
            f"{robot.name!r} has {robot.dof} (parameter 'robot')"
        )
    # A policy for this robot's names must list them in its order: commands are sent in it.
    if set(names) & set(robot.joint_names) and names != robot.joint_names:
        raise ValueError(
            f"the policy file's action.joint_names {list(names)} are robot {robot.name!r}'s "
            f"joints out of order; they must be {list(robot.joint_names)}"
        )
    for name in ("lower", "upper"):
        if not np.isfinite(np.asarray(getattr(spec, name), dtype=np.float64)).all():
            raise ValueError(
                f"the policy file's action.{name} limits are not all finite numbers; the file is "
                "damaged or edited, export the policy again"
            )
    home = np.asarray(spec.home, dtype=np.float64).reshape(-1)
    if home.shape != (robot.dof,) or not robot.within_limits(home).all():
        raise ValueError(
            f"the policy file's action.home {home.tolist()} is not a pose inside robot "
            f"{robot.name!r}'s joint limits; the file is damaged or edited, export it again"
        )
    scale = float(spec.joint_scale)
    if not (math.isfinite(scale) and 0 < scale <= MAX_JOINT_SCALE):
        raise ValueError(
            f"the policy file's action.joint_scale_rad is {spec.joint_scale!r} rad per step; it "
            f"must be in (0, {MAX_JOINT_SCALE:g}]. The file is damaged or edited, export the "
            "policy again"
        )
    cap = COMMAND_SPEED_FACTOR * float(np.min(robot.velocity))
    if scale / period > cap:
        return (
            f"a full action asks for {scale / period:.3g} rad/s (action.joint_scale_rad "
            f"{scale:g} per {period * 1e3:g} ms), above the {cap:.3g} rad/s command cap: the "
            "rate limit will bind"
        )
    return ""
