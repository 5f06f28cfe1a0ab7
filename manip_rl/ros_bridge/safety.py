"""The safety filter between a policy's joint targets and the arm: ROS-free and unit-tested.

Every command the bridge publishes passes through :class:`SafetyFilter`, which applies, in order:

1. **Enable gate.** The filter starts disabled and builds no command until :meth:`enable`.
2. **Stale-state watchdog.** If the newest valid joint state is older than ``state_timeout``, the
   filter holds: it repeats the last command it sent (the arm stays where it was told to be) and
   builds nothing from the old state.
3. **Non-finite guard.** A target, measured position or gripper value that is NaN or infinite is
   never passed on; the filter holds instead.
4. **Rate limit with ramp-in.** Each joint's command changes by at most ``max_step`` rad per
   control step from the previous command (from the measured position on the first step after
   enabling). For ``ramp_time`` seconds after enabling that allowance grows linearly from
   ``1/n`` of ``max_step`` to all of it, so the arm eases into policy control.
5. **Joint-limit clamp.** Last, so nothing can undo it: commands are clamped into
   ``[lower, upper]`` (the policy's action-spec limits, tightened by a margin).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from manip_rl.policy_io import GRIPPER_MAX_OPENING, ActionSpec

# Status strings of a decision, also published in /diagnostics.
DISABLED = "disabled"
NO_STATE = "no_state"
HOLD_STALE = "hold_stale_state"
HOLD_NONFINITE = "hold_nonfinite_input"
OK = "ok"


@dataclasses.dataclass(frozen=True)
class SafetyConfig:
    """Limits of the safety filter (all in the robot's joint convention).

    ``lower``/``upper``: joint limits in rad; ``max_step``: largest change of a joint command per
    control step in rad; ``control_period`` in s; ``ramp_time``: seconds after enabling over which
    the step allowance grows to ``max_step`` (0 disables the ramp); ``state_timeout``: oldest joint
    state (s) a command may be built from.
    """

    lower: np.ndarray
    upper: np.ndarray
    max_step: float
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
        for name in ("max_step", "control_period"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"safety {name} must be a positive number, got {value!r}")
        for name in ("ramp_time", "state_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"safety {name} must be >= 0 seconds, got {value!r}")
        if self.state_timeout == 0:
            raise ValueError("safety state_timeout must be > 0 seconds")

    @classmethod
    def from_action_spec(
        cls,
        spec: ActionSpec,
        control_period: float,
        max_joint_speed: float = 2.0,
        limit_margin: float = 0.0,
        ramp_time: float = 1.0,
        state_timeout: float = 0.1,
    ) -> SafetyConfig:
        """Limits from a policy's action spec (``lower``/``upper`` tightened by ``limit_margin``
        rad) and a joint speed limit in rad/s turned into a per-step change."""
        if not (math.isfinite(limit_margin) and limit_margin >= 0):
            raise ValueError(f"joint_limit_margin must be >= 0 rad, got {limit_margin!r}")
        return cls(
            lower=np.asarray(spec.lower, dtype=np.float64) + limit_margin,
            upper=np.asarray(spec.upper, dtype=np.float64) - limit_margin,
            max_step=float(max_joint_speed) * float(control_period),
            control_period=float(control_period),
            ramp_time=float(ramp_time),
            state_timeout=float(state_timeout),
        )

    @property
    def ramp_steps(self) -> int:
        """Control steps the ramp-in lasts (at least 1)."""
        return max(1, math.ceil(self.ramp_time / self.control_period - 1e-9))


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the filter let through: ``joints`` (None: publish nothing), ``gripper`` (None: no
    gripper command), a ``status`` string, and whether the clamp or the rate limit acted."""

    joints: np.ndarray | None
    gripper: float | None
    status: str
    clamped: bool = False
    rate_limited: bool = False

    @property
    def holding(self) -> bool:
        return self.status in (HOLD_STALE, HOLD_NONFINITE)


class SafetyFilter:
    """Stateful filter; call :meth:`filter` once per control step with the policy's targets."""

    def __init__(self, config: SafetyConfig) -> None:
        self.config = config
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

    def disable(self) -> None:
        self._enabled = False
        self._last_joints = None
        self._last_gripper = None

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
    ) -> Decision:
        """Filter one control step.

        ``targets``: the policy's joint targets (rad); ``measured``: the joint positions they were
        built from; ``state_age``: seconds since that joint state arrived (None: no state yet);
        ``gripper``: the commanded opening in m, or None.
        """
        cfg = self.config
        if not self._enabled:
            return Decision(None, None, DISABLED)
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
