"""When policy_bridge runs a control step: ticks of the control period, locked onto the phase of
the joint-state stream (``trigger: state``, the way a ros2_control controller updates right
after the hardware read), with the lateness of a missed tick reported for the statistics."""

from __future__ import annotations


class ControlClock:
    """The next tick's deadline (``time.perf_counter`` seconds) and the joint-state interval."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.next_deadline: float | None = None  # None: the next step starts the loop afresh
        self.state_interval = 0.0  # s, running mean between valid joint states

    def restart(self) -> None:
        """The next step starts the loop afresh (after activation or an enable)."""
        self.next_deadline = None

    def state_arrived(self, now: float, previous: float | None) -> None:
        """A valid joint state arrived at ``now``; the one before at ``previous`` (or never)."""
        if previous is not None:
            self.state_interval += 0.05 * (now - previous - self.state_interval)

    def due(self, now: float) -> bool:
        """Whether a joint state arriving at ``now`` falls on the next tick."""
        # A state up to half a state interval before the tick counts as on time (arrival
        # jitter), so the step lands on the state nearest the tick, not on the one before it.
        if self.next_deadline is None:
            return True
        tolerance = min(0.25 * self.period, 0.5 * self.state_interval)
        return now >= self.next_deadline - tolerance

    def missed_state(self, now: float) -> bool:
        """Whether the tick has passed by half a period with no joint state to step on."""
        return self.next_deadline is not None and now >= self.next_deadline + 0.5 * self.period

    def tick(self, now: float, from_state: bool) -> float | None:
        """Advance the deadline past a step run at ``now``; the lateness (s) when a whole tick
        was missed (the loop then restarts its phase at ``now``), else None."""
        period = self.period
        if self.next_deadline is None:
            self.next_deadline = now + period
            return None
        late = now - self.next_deadline
        if late > period:
            self.next_deadline = now + period
            return late
        # On a state-triggered step, pull the ticks halfway towards when the step really ran:
        # they lock onto the joint-state stream's phase (so a state never sits just outside the
        # tolerance, making every step late), the mean period stays exact.
        pull = 0.5 * late if from_state else 0.0
        self.next_deadline += period + pull
        return None
