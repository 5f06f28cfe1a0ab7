"""Joint trajectories a 1 kHz torque-controlled arm accepts: cubic segments between 25 Hz points
whose velocity, acceleration and jerk stay inside a robot's limits. numpy only (no ROS).

Why: a joint_trajectory_controller (franka_ros2's ``fr3_arm_controller``) joins the points it
is sent with a cubic spline when they carry positions and velocities (a linear one when they
carry positions only), samples it at 1 kHz and commands the samples. Franka's controller aborts
with a discontinuity reflex when the commanded motion breaks its velocity, acceleration or jerk
limit (franka_ros2 #55, #168; libfranka #163). A position step every 40 ms does exactly that.

:class:`MotionLimiter` turns each control step's joint target into such a cubic plan. A cubic
from ``(q0, v0)`` to ``(q1, v1)`` over ``T`` has an acceleration that is linear in time, from
``a_s`` to ``a_e``. A command reaches the controller some time after its stamp (inference,
transport, the 1 kHz sampling), and the controller then starts from the state it commands at
that instant. So each plan follows the previous one, unchanged, for ``timing_tolerance`` s past
its stamp (the previous plan's knots in that window are points of the new one), and only then
turns toward the new target: a command that arrives within that window joins the old motion
exactly, with no acceleration jump. From there the limiter picks ``a_s`` equal to the old
plan's acceleration and ``a_e`` to track the target, clipped to the acceleration limit and the
jerk limit; the target velocity is bounded by the velocity limit and by a braking law (the arm
can always stop before the target and before the joint limits). Each plan ends at rest: after
its first new point it carries the points of a stop, so an arm that hears nothing more
decelerates smoothly (and a controller that refuses a non-zero final velocity accepts it).

:func:`segment_peaks` gives a plan's peak velocity, acceleration and jerk, for the tests and for
the emulated reflex (:mod:`manip_rl.robots.reflex`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from manip_rl.robots.description import RobotDescription

SAMPLE_PERIOD = 0.001  # s; Franka's control loop and franka_ros2's controller_manager run at 1 kHz
MAX_STOP_POINTS = 60  # points a plan's stop tail may take (2.4 s at 25 Hz; a stop takes < 1 s)
MAX_SPEED_CUTS = 6  # halvings of a joint's speed toward a position limit its plan would cross


@dataclasses.dataclass(frozen=True)
class MotionLimits:
    """Per-joint limits a plan respects (the robot's datasheet limits times the margins).

    ``velocity_margin``, ``acceleration_margin``, ``jerk_margin``: fractions of the datasheet's
    limits the plans use; ``timing_tolerance`` (s): how long after its stamp a command may reach
    the arm and still join the previous motion exactly (each plan follows the previous one that
    long); ``period``: the segment length (one control period); ``tracking_time`` (s): the target is approached at ``error / tracking_time``;
    ``start_time`` (s): the first plan after a reset is a rest at the measured position reached
    in this long, so that the controller's own hold position (a little off the measurement:
    sensor noise, tracking error) is joined gently; the plan is re-sent unchanged until then.
    """

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray
    period: float
    velocity_margin: float = 0.8
    acceleration_margin: float = 0.8
    jerk_margin: float = 0.5
    timing_tolerance: float = 0.02
    tracking_time: float = 0.06
    start_time: float = 0.2

    def __post_init__(self) -> None:
        for name in ("lower", "upper", "velocity", "acceleration", "jerk"):
            value = np.asarray(getattr(self, name), dtype=np.float64).reshape(-1)
            if not np.isfinite(value).all():
                raise ValueError(f"motion limits: {name} must be finite numbers")
            object.__setattr__(self, name, value)
        n = self.lower.shape
        for name in ("upper", "velocity", "acceleration", "jerk"):
            if getattr(self, name).shape != n:
                raise ValueError(f"motion limits: {name} has {getattr(self, name).size} values")
        if (self.velocity <= 0).any() or (self.acceleration <= 0).any() or (self.jerk <= 0).any():
            raise ValueError("motion limits: velocity, acceleration and jerk must be > 0")
        for name in ("velocity_margin", "acceleration_margin", "jerk_margin"):
            value = float(getattr(self, name))
            if not (0 < value <= 1):
                raise ValueError(f"motion limits: {name} must be in (0, 1], got {value!r}")
        for name in ("period", "tracking_time", "start_time"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"motion limits: {name} must be > 0 s, got {value!r}")
        if not (math.isfinite(self.timing_tolerance) and self.timing_tolerance >= 0):
            raise ValueError(f"trajectory_timing_tolerance must be >= 0 s: {self.timing_tolerance}")

    @classmethod
    def for_robot(
        cls,
        robot: RobotDescription,
        period: float,
        lower: np.ndarray | None = None,
        upper: np.ndarray | None = None,
        **margins: float,
    ) -> MotionLimits:
        """The limits of ``robot`` (its datasheet's), positions narrowed to ``lower``/``upper``."""
        return cls(
            lower=robot.lower if lower is None else lower,
            upper=robot.upper if upper is None else upper,
            velocity=robot.velocity,
            acceleration=robot.acceleration,
            jerk=robot.jerk,
            period=float(period),
            **margins,
        )

    @property
    def plan_velocity(self) -> np.ndarray:
        return self.velocity * self.velocity_margin

    @property
    def plan_acceleration(self) -> np.ndarray:
        return self.acceleration * self.acceleration_margin

    @property
    def segment_jerk(self) -> np.ndarray:
        return self.jerk * self.jerk_margin


@dataclasses.dataclass(frozen=True)
class TrajectoryPlan:
    """Knots ``k = 0..K`` at ``t0 + times[k]`` (``times[0] = 0``): positions, velocities and
    accelerations (``(K+1, n)`` arrays). Between knots the motion is the cubic whose
    acceleration goes linearly from ``acc[k]`` to ``acc[k+1]``: the cubic Hermite spline through
    the positions and velocities. After the last knot (at rest) the arm holds its position."""

    t0: float
    times: np.ndarray
    pos: np.ndarray
    vel: np.ndarray
    acc: np.ndarray

    @property
    def end_time(self) -> float:
        return self.t0 + float(self.times[-1])

    def state_at(self, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position, velocity and acceleration at time ``t`` (before ``t0``: the first knot)."""
        s = max(0.0, t - self.t0)
        k = int(np.searchsorted(self.times, s, side="right")) - 1
        if k >= len(self.pos) - 1:
            return self.pos[-1].copy(), np.zeros_like(self.pos[-1]), np.zeros_like(self.pos[-1])
        T = float(self.times[k + 1] - self.times[k])
        tau = s - float(self.times[k])
        q0, v0, a0, a1 = self.pos[k], self.vel[k], self.acc[k], self.acc[k + 1]
        j = (a1 - a0) / T
        return (
            q0 + v0 * tau + a0 * tau**2 / 2 + j * tau**3 / 6,
            v0 + a0 * tau + j * tau**2 / 2,
            a0 + j * tau,
        )

    def points(self) -> list[tuple[float, np.ndarray, np.ndarray]]:
        """``(time_from_start, positions, velocities)`` of knots 1..K: what a JointTrajectory
        carries (knot 0 is where the arm already is)."""
        return [
            (float(self.times[k]), self.pos[k].copy(), self.vel[k].copy())
            for k in range(1, len(self.pos))
        ]


def hermite_cubic(
    q0: np.ndarray, v0: np.ndarray, q1: np.ndarray, v1: np.ndarray, T: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Coefficients ``c0..c3`` of ``q(t) = c0 + c1 t + c2 t^2 + c3 t^3`` on ``[0, T]`` through
    ``(q0, v0)`` and ``(q1, v1)``: the spline a joint_trajectory_controller runs between points
    that carry positions and velocities."""
    d = q1 - q0
    c2 = (3 * d - (2 * v0 + v1) * T) / T**2
    c3 = (-2 * d + (v0 + v1) * T) / T**3
    return q0, v0, c2, c3


def segment_peaks(
    q0: np.ndarray, v0: np.ndarray, q1: np.ndarray, v1: np.ndarray, T: float
) -> dict[str, np.ndarray]:
    """Per joint over the cubic from ``(q0, v0)`` to ``(q1, v1)`` in ``T`` s: the peak ``|v|``,
    ``|a|`` and ``|jerk|``, the start and end accelerations, and the lowest and highest
    position (extrema where the velocity is zero inside the segment)."""
    c0, c1, c2, c3 = hermite_cubic(q0, v0, q1, v1, T)
    a_start, a_end = 2 * c2, 2 * c2 + 6 * c3 * T
    # |v| peaks at an end or where a = 0 inside.
    with np.errstate(divide="ignore", invalid="ignore"):
        t_v = np.where(c3 != 0, -c2 / (3 * c3), -1.0)
    t_v = np.where((t_v > 0) & (t_v < T), t_v, 0.0)
    v_in = c1 + 2 * c2 * t_v + 3 * c3 * t_v**2
    vel = np.maximum.reduce([np.abs(v0), np.abs(v1), np.abs(v_in)])
    # Position extrema: roots of v(t) = c1 + 2 c2 t + 3 c3 t^2 inside (0, T).
    lo, hi = np.minimum(q0, q1), np.maximum(q0, q1)
    qa, qb, qc = 3 * c3, 2 * c2, c1
    disc = qb**2 - 4 * qa * qc
    root = np.sqrt(np.maximum(disc, 0.0))
    for sign in (-1.0, 1.0):
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(
                np.abs(qa) > 1e-12,
                (-qb + sign * root) / (2 * qa),
                np.where(np.abs(qb) > 1e-12, -qc / qb, -1.0),
            )
        ok = (disc >= 0) & (t > 0) & (t < T)
        q_t = c0 + c1 * t + c2 * t**2 + c3 * t**3
        lo = np.where(ok, np.minimum(lo, q_t), lo)
        hi = np.where(ok, np.maximum(hi, q_t), hi)
    return {
        "velocity": vel,
        "acceleration": np.maximum(np.abs(a_start), np.abs(a_end)),
        "jerk": np.abs(6 * c3),
        "a_start": a_start,
        "a_end": a_end,
        "lowest": lo,
        "highest": hi,
    }


def plan_peaks(plan: TrajectoryPlan) -> dict[str, np.ndarray]:
    """:func:`segment_peaks` over every segment of ``plan`` (max/min over segments), plus
    ``knot_jump``: the largest acceleration jump between adjacent segments."""
    out: dict[str, np.ndarray] = {}
    prev_end = None
    jump = np.zeros_like(plan.pos[0])
    for k in range(len(plan.pos) - 1):
        T = float(plan.times[k + 1] - plan.times[k])
        p = segment_peaks(plan.pos[k], plan.vel[k], plan.pos[k + 1], plan.vel[k + 1], T)
        if prev_end is not None:
            jump = np.maximum(jump, np.abs(p["a_start"] - prev_end))
        prev_end = p["a_end"]
        for key in ("velocity", "acceleration", "jerk", "highest"):
            out[key] = p[key] if key not in out else np.maximum(out[key], p[key])
        out["lowest"] = (
            p["lowest"] if "lowest" not in out else np.minimum(out["lowest"], p["lowest"])
        )
    if prev_end is not None:  # the hold after the last knot has zero acceleration
        jump = np.maximum(jump, np.abs(prev_end))
    out["knot_jump"] = jump
    return out


def _reach(
    q0: np.ndarray,
    v0: np.ndarray,
    tail: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    period: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest position per joint over the segments from ``(q0, v0)`` through
    the ``tail`` knots, each ``period`` s long: one :func:`segment_peaks` over all of them."""
    qs = np.array([q0] + [k[0] for k in tail])
    vs = np.array([v0] + [k[1] for k in tail])
    p = segment_peaks(qs[:-1], vs[:-1], qs[1:], vs[1:], period)
    return p["lowest"].min(axis=0), p["highest"].max(axis=0)


class MotionLimiter:
    """Plans each control step's cubic trajectory toward a joint target; see the module
    docstring. Call :meth:`reset` when commanding starts (the arm at rest where it is)."""

    def __init__(self, limits: MotionLimits) -> None:
        self.limits = limits
        self._plan: TrajectoryPlan | None = None
        self._start_until = -math.inf

    @property
    def plan(self) -> TrajectoryPlan | None:
        return self._plan

    def __deepcopy__(self, memo: dict) -> MotionLimiter:
        # The limits and plans are frozen and never changed in place (a new plan replaces the
        # old one): a copy shares them. The bridge copies its filter every step (a command it
        # may have to take back), so this keeps that copy cheap.
        other = MotionLimiter.__new__(MotionLimiter)
        vars(other).update(vars(self))
        return other

    def reset(self) -> None:
        self._plan = None
        self._start_until = -math.inf

    def _brake_speed(self, distance: np.ndarray) -> np.ndarray:
        """The speed from which the arm stops within ``distance`` at half the planning
        acceleration, the acceleration ramp at the segment jerk included."""
        lim = self.limits
        a_b = 0.5 * lim.plan_acceleration
        ramp = lim.plan_acceleration / lim.segment_jerk + lim.period  # s spent ramping
        d = np.maximum(distance, 0.0)
        return a_b * (-ramp + np.sqrt(ramp**2 + 2 * d / a_b))

    def _step(
        self, q0: np.ndarray, v0: np.ndarray, a_s: np.ndarray, v_ref: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One segment from ``(q0, v0, a_s)`` aiming at velocity ``v_ref``: ``(q1, v1, a_e)``."""
        lim = self.limits
        T = lim.period
        # a_e that reaches v_ref two periods on with the acceleration back to zero (for a linear
        # acceleration profile this settles the velocity in two steps).
        a_e = (2 * (v_ref - v0) / T - a_s) / 2
        a_max = lim.plan_acceleration
        a_e = np.clip(a_e, -a_max, a_max)
        da = lim.segment_jerk * T
        a_e = np.clip(a_e, a_s - da, a_s + da)
        v1 = v0 + (a_s + a_e) * T / 2
        q1 = q0 + v0 * T + (a_s / 3 + a_e / 6) * T**2
        return q1, v1, a_e

    def _tail(
        self, q0: np.ndarray, v0: np.ndarray, a0: np.ndarray, v_ref: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The knots after ``(q0, v0, a0)``: one segment toward ``v_ref``, then the stop tail
        toward zero velocity until the arm is at rest (the last knot's velocity and
        acceleration set to zero: a residual below 1e-9)."""
        out = []
        q, v, a = self._step(q0, v0, a0, v_ref)
        for _ in range(MAX_STOP_POINTS + 1):
            out.append((q, v, a))
            if np.abs(v).max() < 1e-9 and np.abs(a).max() < 1e-9:
                break
            q, v, a = self._step(q, v, a, np.zeros_like(v))
        q, _, _ = out[-1]
        out[-1] = (q, np.zeros_like(v), np.zeros_like(a))
        return out

    def plan_step(
        self, target: np.ndarray, now: float, measured: np.ndarray | None = None
    ) -> TrajectoryPlan:
        """The plan to send at time ``now`` (s, the clock of the command's stamp) for the joint
        ``target`` (rad, already inside the position limits). The first plan after
        :meth:`reset` comes to rest at ``measured`` (or at ``target`` when not given)."""
        lim = self.limits
        now = float(now)
        target = np.asarray(target, dtype=np.float64)
        if self._plan is None:
            # Start: come to rest at the measured position in start_time (see MotionLimits).
            start = target if measured is None else np.asarray(measured, dtype=np.float64)
            rest = np.zeros((2, start.size))
            times = np.array([0.0, lim.start_time])
            self._plan = TrajectoryPlan(now, times, np.array([start, start]), rest, rest.copy())
            self._start_until = now + lim.start_time
            return self._plan
        if now < self._start_until:
            return self._plan  # the same plan again: the controller's spline does not change
        old = self._plan
        # Follow the previous plan for timing_tolerance s: its knots in that window, then its
        # state at the window's end, where the new motion starts.
        t_new = now + lim.timing_tolerance
        times, pos, vel, acc = [0.0], [], [], []
        q, v, a = old.state_at(now)
        pos.append(q)
        vel.append(v)
        acc.append(a)
        for k in range(1, len(old.times)):
            t_k = old.t0 + float(old.times[k])
            if now < t_k < t_new - 1e-6:
                times.append(t_k - now)
                pos.append(old.pos[k].copy())
                vel.append(old.vel[k].copy())
                acc.append(old.acc[k].copy())
        if lim.timing_tolerance > 0:
            q0, v0, a0 = old.state_at(t_new)
            times.append(lim.timing_tolerance)
            pos.append(q0)
            vel.append(v0)
            acc.append(a0)
        q0, v0, a0 = pos[-1], vel[-1], acc[-1]
        e = np.clip(target, lim.lower, lim.upper) - q0
        # Room to brake: before the target (no overshoot) and before the joint limits.
        speed = np.minimum(np.abs(e) / lim.tracking_time, lim.plan_velocity)
        speed = np.minimum(speed, self._brake_speed(np.abs(e)))
        v_ref = np.sign(e) * speed
        to_limit = np.where(v_ref >= 0, lim.upper - q0, q0 - lim.lower)
        v_ref = np.sign(v_ref) * np.minimum(np.abs(v_ref), self._brake_speed(to_limit))
        # The braking law above is an estimate: the step law settles over two segments, so the
        # arm can travel past it. Verify the new part (its segments' extrema, exactly) against
        # the position limits and, for each joint that crosses one, halve its speed toward it
        # until none does; a last resort brakes that joint at once.
        for attempt in range(MAX_SPEED_CUTS + 1):
            tail = self._tail(q0, v0, a0, v_ref)
            lowest, highest = _reach(q0, v0, tail, lim.period)
            over = (lowest < lim.lower) | (highest > lim.upper)
            if not over.any():
                break
            cut = 0.0 if attempt == MAX_SPEED_CUTS - 1 else 0.5
            v_ref = np.where(over, v_ref * cut, v_ref)
        t = times[-1]
        for q, v, a in tail:
            t += lim.period
            times.append(t)
            pos.append(q)
            vel.append(v)
            acc.append(a)
        self._plan = TrajectoryPlan(
            now, np.array(times), np.array(pos), np.array(vel), np.array(acc)
        )
        return self._plan
