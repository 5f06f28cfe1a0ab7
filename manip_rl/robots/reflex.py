"""The robot side of a Franka arm under franka_ros2, emulated: a joint_trajectory_controller-like
interpolator sampled at 1 kHz, and Franka's reflex. numpy only (no ROS), used by ``sim_arm``
and, optionally, by the training environments (so simulation and bridge agree).

:class:`TrajectoryInterpolator` does what ros2_controllers' joint_trajectory_controller does with
a new trajectory: it starts from the state it is commanding at that instant and joins the points
by cubic Hermite splines when they carry positions and velocities (linear segments when they
carry positions only); the times are the header stamp plus each ``time_from_start`` (the arrival
time when the stamp is zero). As ros2_controllers' ``Trajectory::sample``: the commanded state
at arrival is joined to the first point only when that point still lies ahead; a trajectory
that arrives after its first point is sampled between its own points from then on, so the
command jumps to wherever the new spline is at that instant (a plan that follows the previous
one up to that instant joins it exactly; any other faults the reflex, as on the robot). A
trajectory that ends in the past is refused. After the last point it holds that position.

:class:`Reflex` checks every 1 kHz sample of the commanded motion, as libfranka checks the
commands of its motion generators: position inside the limits, and the velocity, acceleration
and jerk of the commanded signal (its first, second and third backward differences) inside the
datasheet's limits. Any violation faults the arm. :class:`EmulatedArm` ties the two: once
faulted, the arm holds where it stopped and refuses commands until :meth:`EmulatedArm.recover`
(franka_ros2's error recovery, ``libfranka``'s ``automaticErrorRecovery``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from manip_rl.robots.description import RobotDescription
from manip_rl.robots.motion import SAMPLE_PERIOD, hermite_cubic

# Relative slack on the limits for the finite differences' rounding (the real robot's reflexes
# have their own tolerances; this one is far below any margin the bridge plans with).
REFLEX_TOLERANCE = 1e-6

# Up to this many 1 kHz ticks, EmulatedArm.advance samples them one by one (about 55 us a tick
# here); beyond, as arrays (about 200 us a call, a little more per tick).
_FEW_TICKS = 4

Point = tuple[float, np.ndarray, np.ndarray | None]  # (absolute time s, positions, velocities)


class TrajectoryInterpolator:
    """Commanded joint positions over time; see the module docstring."""

    def __init__(self, position: Sequence[float]) -> None:
        self.hold(position)

    def hold(self, position: Sequence[float]) -> None:
        """Command ``position`` from now on (a forward position command: a step)."""
        self._hold = np.array(position, dtype=np.float64)
        self._segments: list[tuple[float, float, tuple | None, np.ndarray, np.ndarray]] = []
        self._k = 0  # the segment sampled last (samples mostly move forward in time)

    def set_trajectory(self, t: float, points: Sequence[Point]) -> bool:
        """Start a new trajectory that arrives at time ``t``: from the state commanded at ``t``
        to its first point if that lies ahead, else between its own points (see the module
        docstring). False (the old one goes on) when every point lies in the past."""
        if not points or points[-1][0] <= t:
            return False
        # The points that still matter: the last one at or before t (a segment from it may be
        # running at t), and every one after.
        first = 0
        while first + 1 < len(points) and points[first + 1][0] <= t:
            first += 1
        if points[first][0] > t:  # the first point lies ahead: join it from the commanded state
            q, v = self.sample(t)
            t_prev, q_prev, v_prev, has_v = t, q, v, True
            rest = points
        else:
            t_prev, q_prev, v_prev = points[first]
            q_prev = np.asarray(q_prev, dtype=np.float64)
            has_v = v_prev is not None
            v_prev = np.asarray(v_prev, dtype=np.float64) if has_v else np.zeros_like(q_prev)
            rest = points[first + 1 :]
        segments = []
        for t_k, q_k, v_k in rest:
            q_k = np.asarray(q_k, dtype=np.float64)
            duration = t_k - t_prev
            v_k_arr = np.zeros_like(q_k) if v_k is None else np.asarray(v_k, dtype=np.float64)
            if v_k is None or not has_v or duration <= 0:
                coeffs = None  # linear: positions only (as the controller, if either lacks them)
            else:
                coeffs = hermite_cubic(q_prev, v_prev, q_k, v_k_arr, duration)
            if duration > 0:
                segments.append((t_prev, t_k, coeffs, q_prev, q_k))
            t_prev, q_prev, v_prev, has_v = t_k, q_k, v_k_arr, v_k is not None
        self._segments, self._k = segments, 0
        self._hold = q_prev.copy()
        return True

    def sample(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Commanded position and velocity at ``t``."""
        segments = self._segments
        if self._k < len(segments) and t < segments[self._k][0]:
            self._k = 0  # back in time
        for k in range(self._k, len(segments)):
            t0, t1, coeffs, q0, q1 = segments[k]
            if t < t1:
                self._k = k
                s = max(0.0, t - t0)
                if coeffs is None:
                    rate = (q1 - q0) / (t1 - t0)
                    return q0 + rate * s, rate
                c0, c1, c2, c3 = coeffs
                return c0 + c1 * s + c2 * s**2 + c3 * s**3, c1 + 2 * c2 * s + 3 * c3 * s**2
        return self._hold.copy(), np.zeros_like(self._hold)

    def sample_many(self, times: np.ndarray) -> np.ndarray:
        """Commanded positions at increasing ``times`` (one row each): :meth:`sample`'s
        positions, evaluated per segment on arrays."""
        out = np.empty((len(times), len(self._hold)))
        segments = self._segments
        ends = np.array([seg[1] for seg in segments]) if segments else np.empty(0)
        which = np.searchsorted(ends, times, side="right")  # first segment with t < t1
        for k in np.unique(which):
            rows = which == k
            if k >= len(segments):
                out[rows] = self._hold
                continue
            t0, t1, coeffs, q0, q1 = segments[k]
            s = np.maximum(times[rows] - t0, 0.0)[:, None]
            if coeffs is None:
                out[rows] = q0 + (q1 - q0) / (t1 - t0) * s
            else:
                c0, c1, c2, c3 = coeffs
                out[rows] = c0 + c1 * s + c2 * s**2 + c3 * s**3
        return out

    @property
    def end_time(self) -> float:
        return self._segments[-1][1] if self._segments else -np.inf


class Reflex:
    """Checks 1 kHz samples of commanded joint positions against ``robot``'s limits."""

    def __init__(self, robot: RobotDescription, dt: float = SAMPLE_PERIOD) -> None:
        self.robot, self.dt = robot, float(dt)
        tol = 1.0 + REFLEX_TOLERANCE
        # Rows: velocity, acceleration, jerk, as backward differences of the last 4 samples
        # (oldest first), each scaled by 1/dt^k; one matrix product per sample.
        self._diff = np.array(
            [[0, 0, -1, 1], [0, 1, -2, 1], [-1, 3, -3, 1]], dtype=np.float64
        ) / np.array([[dt], [dt**2], [dt**3]])
        self._limits = np.vstack([robot.velocity, robot.acceleration, robot.jerk]) * tol
        self._lower, self._upper = robot.lower - 1e-9, robot.upper + 1e-9
        self._h = np.zeros((4, robot.dof))

    def restart(self, position: Sequence[float]) -> None:
        """The arm is at rest at ``position`` (after a reset or a recovery)."""
        self._h[:] = np.asarray(position, dtype=np.float64)

    def check(self, q: np.ndarray) -> str:
        """Add one sample; the reason of a violation ('' when the motion is within limits)."""
        h = self._h
        h[:-1] = h[1:]
        h[-1] = q
        if ((q < self._lower) | (q > self._upper)).any() or not np.isfinite(q).all():
            return self._explain(q, None)
        values = self._diff @ h
        if (np.abs(values) > self._limits).any():
            return self._explain(q, values)
        return ""

    def check_many(self, qs: np.ndarray) -> tuple[int, str]:
        """:meth:`check` on consecutive samples (rows) at once: the index of the first that
        violates and why, or ``(-1, "")``. The history then ends at that sample (or the last)."""
        h = np.concatenate([self._h, qs])
        windows = np.lib.stride_tricks.sliding_window_view(h, 4, axis=0)[1:]  # (n, dof, 4)
        values = np.einsum("rk,ndk->nrd", self._diff, windows)  # (n, 3, dof)
        outside = ((qs < self._lower) | (qs > self._upper)).any(axis=1) | ~np.isfinite(qs).all(
            axis=1
        )
        bad = outside | (np.abs(values) > self._limits).any(axis=(1, 2))
        first = int(np.argmax(bad)) if bad.any() else -1
        end = first + 1 if first >= 0 else len(qs)
        self._h[:] = h[end : end + 4]
        if first < 0:
            return -1, ""
        return first, self._explain(qs[first], None if outside[first] else values[first])

    def _explain(self, q: np.ndarray, values: np.ndarray | None) -> str:
        names = self.robot.joint_names
        if values is None:
            if not np.isfinite(q).all():
                return "commanded position is not finite"
            i = int(np.flatnonzero((q < self._lower) | (q > self._upper))[0])
            return f"joint_position_limits_violation: {names[i]} commanded {q[i]:.4f} rad"
        bad = np.abs(values) > self._limits
        row, i = (int(x[0]) for x in np.nonzero(bad))
        kind = ("velocity", "acceleration", "jerk")[row]
        limit = self._limits[row, i] / (1 + REFLEX_TOLERANCE)
        return (
            f"joint_motion_generator_{kind}_discontinuity: {names[i]} commanded "
            f"{values[row, i]:.4g} (limit {limit:.4g})"
        )


class EmulatedArm:
    """A Franka arm's commanded motion at 1 kHz: the interpolator, checked by the reflex.

    :meth:`advance` runs the 1 kHz ticks up to a time and returns the position commanded then
    (what the simulated joint servos track). ``check=False`` runs the interpolator alone (an arm
    without Franka's reflexes)."""

    def __init__(
        self,
        robot: RobotDescription,
        position: Sequence[float],
        t: float = 0.0,
        check: bool = True,
        dt: float = SAMPLE_PERIOD,
    ) -> None:
        self.robot, self.check, self.dt = robot, check, float(dt)
        self.interpolator = TrajectoryInterpolator(position)
        self.reflex = Reflex(robot, dt)
        self.reflexes = 0  # faults since this object was made
        self.fault = ""  # the reason of the current fault ('' when none)
        self.rejected = 0  # commands refused while faulted
        self.reset(position, t)

    def reset(self, position: Sequence[float], t: float) -> None:
        """At rest at ``position`` at time ``t``, no fault (a new episode)."""
        self.interpolator.hold(position)
        self.reflex.restart(position)
        self.fault = ""
        self._tick = int(np.floor(t / self.dt))
        self._last = np.array(position, dtype=np.float64)

    @property
    def tick_time(self) -> float:
        """The time of the last 1 kHz tick run (commanded and checked)."""
        return self._tick * self.dt

    def recover(self, t: float) -> None:
        """Clear a fault: the arm is at rest where it stopped."""
        self.fault = ""
        self.interpolator.hold(self._last)
        self.reflex.restart(self._last)
        self._tick = max(self._tick, int(np.floor(t / self.dt)))

    def command_position(self, position: Sequence[float]) -> bool:
        """A forward position command (applies at once). False while faulted."""
        if self.fault:
            self.rejected += 1
            return False
        self.interpolator.hold(position)
        return True

    def command_trajectory(self, t: float, points: Sequence[Point]) -> bool:
        """A new trajectory starting at ``t`` from the state commanded then, or at the last
        1 kHz tick if that is later (ticks already commanded stay as they were). False while
        faulted or when every point lies before that."""
        if self.fault:
            self.rejected += 1
            return False
        return self.interpolator.set_trajectory(max(t, self.tick_time), points)

    def advance(self, t: float) -> np.ndarray:
        """Run the 1 kHz ticks up to ``t``; the commanded position at ``t``. A few ticks (a
        simulator's physics step) run one at a time, more as arrays: the same results
        (tested), each the faster way for its size."""
        if int(np.floor(t / self.dt + 1e-9)) - self._tick <= _FEW_TICKS:
            return self.advance_tick_by_tick(t)
        return self.advance_through(np.array([float(t)]))[0]

    def advance_through(self, times: np.ndarray) -> np.ndarray:
        """:meth:`advance` to each of the increasing ``times`` in turn; the commanded positions
        then (one row each). The ticks are sampled and checked as arrays
        (:meth:`TrajectoryInterpolator.sample_many`, :meth:`Reflex.check_many`), with the
        results of :meth:`advance_tick_by_tick` (tested)."""
        times = np.asarray(times, dtype=np.float64)
        end = int(np.floor(times[-1] / self.dt + 1e-9))
        if self.fault:
            self._tick = max(self._tick, end)
            return np.tile(self._last, (len(times), 1))
        start = self._tick
        ticks = np.arange(start + 1, end + 1, dtype=np.float64) * self.dt
        both = self.interpolator.sample_many(np.concatenate([ticks, times]))
        qs, out = both[: len(ticks)], both[len(ticks) :]
        first, reason = self.reflex.check_many(qs) if self.check and len(qs) else (-1, "")
        if first >= 0:
            if first > 0:
                self._last = qs[first - 1]
            self._fault_with(reason)
            # Once the faulting tick has run, the arm holds where it stopped.
            ran = np.floor(times / self.dt + 1e-9) >= start + 1 + first
            out[ran] = self._last
        elif len(qs):
            self._last = qs[-1]
        self._tick = max(self._tick, end)
        return out

    def advance_tick_by_tick(self, t: float) -> np.ndarray:
        """:meth:`advance`, one 1 kHz tick at a time (the reference it is tested against)."""
        end = int(np.floor(t / self.dt + 1e-9))
        while self._tick < end:
            self._tick += 1
            if self.fault:
                continue
            q, _ = self.interpolator.sample(self._tick * self.dt)
            if self.check:
                reason = self.reflex.check(q)
                if reason:
                    self._fault_with(reason)
                    continue
            self._last = q
        if self.fault:
            return self._last.copy()
        q, _ = self.interpolator.sample(t)
        return q

    def _fault_with(self, reason: str) -> None:
        self.fault = reason
        self.reflexes += 1
        self.interpolator.hold(self._last)  # the arm stops where it was
