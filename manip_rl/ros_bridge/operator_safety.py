"""Operator safety of policy_bridge: a heartbeat, a run time limit and a TCP workspace box.
ROS-free and unit-tested.

* **Heartbeat.** When required (parameter ``heartbeat``: ``required``, ``off``, or ``auto``: on
  for the FR3 profile), the bridge enables only while heartbeats arrive, and the enable lapses
  (the bridge disables, as on ``~/enable false``) when none came for ``heartbeat_timeout`` s or
  one says ``false`` (a released dead-man switch).
* **Run time limit.** ``run_time_limit`` s after an enable (0: none), the enable lapses.
* **Workspace.** Every command the safety filter lets through is checked by forward kinematics
  of the commanded joints (both action modes: the check is on joints, after the filter): a TCP
  outside the box ``workspace_min``..``workspace_max`` (m, base frame) is not sent. The bridge
  holds instead, with the filter's state as if that step never ran (:func:`snapshot` and
  :func:`restore`), so the next command is still bounded against the last one *sent*.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

HOLD_WORKSPACE = "hold_outside_workspace"
LAPSE_HEARTBEAT = "heartbeat_lapsed"
LAPSE_RUN_TIME = "run_time_limit"
HEARTBEAT_MODES = ("auto", "required", "off")
# Robot profiles whose bridge requires a heartbeat under heartbeat: auto (a real FR3 setup).
HEARTBEAT_BY_DEFAULT = ("fr3",)


@dataclasses.dataclass(frozen=True)
class OperatorConfig:
    """``heartbeat_required``; ``heartbeat_timeout`` (s); ``run_time_limit`` (s, 0: none);
    ``workspace_min``/``workspace_max``: the TCP box (m, base frame)."""

    heartbeat_required: bool = False
    heartbeat_timeout: float = 0.5
    run_time_limit: float = 0.0
    workspace_min: Sequence[float] = (-math.inf,) * 3
    workspace_max: Sequence[float] = (math.inf,) * 3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.heartbeat_timeout) and self.heartbeat_timeout > 0):
            raise ValueError(
                f"parameter heartbeat_timeout must be > 0 s, got {self.heartbeat_timeout!r}"
            )
        if not (math.isfinite(self.run_time_limit) and self.run_time_limit >= 0):
            raise ValueError(
                f"parameter run_time_limit must be >= 0 s (0: none), got {self.run_time_limit!r}"
            )
        lo = np.asarray(self.workspace_min, dtype=np.float64)
        hi = np.asarray(self.workspace_max, dtype=np.float64)
        if lo.shape != (3,) or hi.shape != (3,) or np.isnan(lo).any() or np.isnan(hi).any():
            raise ValueError(
                f"parameters workspace_min and workspace_max must be 3 numbers each (x, y, z in "
                f"m), got {list(lo)} and {list(hi)}"
            )
        if (lo >= hi).any():
            raise ValueError(
                f"the workspace box is empty: workspace_min {lo.tolist()} must be below "
                f"workspace_max {hi.tolist()} on every axis"
            )
        object.__setattr__(self, "workspace_min", lo)
        object.__setattr__(self, "workspace_max", hi)
        # Read in every control step: decided once (the config is frozen).
        object.__setattr__(self, "_has_box", bool(np.isfinite(lo).any() or np.isfinite(hi).any()))

    @property
    def has_box(self) -> bool:
        """Whether any side of the workspace box is finite (the check runs at all)."""
        return self._has_box


def heartbeat_required(mode: str, robot_name: str) -> bool:
    """The ``heartbeat`` parameter for robot ``robot_name``: ValueError naming it when unknown."""
    if mode not in HEARTBEAT_MODES:
        raise ValueError(f"parameter 'heartbeat' is {mode!r}; use one of {HEARTBEAT_MODES}")
    return mode == "required" or (mode == "auto" and robot_name in HEARTBEAT_BY_DEFAULT)


class OperatorGuard:
    """The heartbeat, the run time and the workspace; times in s on the node clock."""

    def __init__(self, config: OperatorConfig) -> None:
        self.config = config
        self._last_beat = -math.inf
        self._released = False
        self._enabled_at: float | None = None
        self.detail = ""

    def heartbeat(self, now: float, alive: bool = True) -> None:
        """A heartbeat arrived at ``now``; ``alive`` False: the operator released it."""
        self._last_beat = now
        self._released = not alive

    def _heartbeat_problem(self, now: float) -> str:
        if not self.config.heartbeat_required:
            return ""
        if self._released:
            return "the heartbeat says false (the operator released it)"
        age = now - self._last_beat
        if age > self.config.heartbeat_timeout:
            seen = "none received" if math.isinf(age) else f"the last one {age:.2f} s ago"
            return (
                f"no heartbeat within heartbeat_timeout {self.config.heartbeat_timeout:g} s "
                f"({seen})"
            )
        return ""

    def enable_problem(self, now: float) -> str:
        """Why enabling must be refused now ('' when it may)."""
        problem = self._heartbeat_problem(now)
        return f"refusing to enable: {problem}; publish the heartbeat first" if problem else ""

    def enabled(self, now: float) -> None:
        """The bridge enabled at ``now``: the run time starts."""
        self._enabled_at = now

    def disabled(self) -> None:
        self._enabled_at = None

    def lapse(self, now: float) -> str:
        """'' while the enable may go on, else why it lapses (:attr:`detail` says more)."""
        problem = self._heartbeat_problem(now)
        if problem:
            self.detail = f"enable lapsed: {problem}"
            return LAPSE_HEARTBEAT
        limit = self.config.run_time_limit
        if limit > 0 and self._enabled_at is not None and now - self._enabled_at > limit:
            self.detail = f"enable lapsed: run_time_limit {limit:g} s reached; enable again"
            return LAPSE_RUN_TIME
        return ""

    def outside_workspace(self, tcp: np.ndarray) -> str:
        """'' when the TCP position ``tcp`` (m) lies in the box, else what is wrong."""
        cfg = self.config
        if not np.isfinite(tcp).all():
            return f"TCP {tcp.tolist()} is not finite"
        out = (tcp < cfg.workspace_min) | (tcp > cfg.workspace_max)
        if not out.any():
            return ""
        axis = int(np.flatnonzero(out)[0])
        return (
            f"the command puts the TCP at {np.round(tcp, 4).tolist()} m, {'xyz'[axis]} outside "
            f"the workspace [{cfg.workspace_min[axis]:g}, {cfg.workspace_max[axis]:g}] m "
            "(workspace_min/workspace_max): not sent, holding"
        )


def snapshot(safety_filter: Any) -> dict:
    """The safety filter's state (its configuration aside), to :func:`restore` after a command
    that was not sent. A copy of the object's attributes: it covers whatever state the filter
    keeps (last command, velocities, ramp count)."""
    state = vars(safety_filter)
    # Numbers, strings, None and frozen configurations are kept as they are (never mutated);
    # arrays are copied; anything else (the motion limiter's plan) is deep-copied.
    return {k: _copied(v) for k, v in state.items() if k != "config"}


def _copied(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray):
        return value.copy()
    if dataclasses.is_dataclass(value) and type(value).__dataclass_params__.frozen:
        return value
    return copy.deepcopy(value)


def restore(safety_filter: Any, state: dict) -> None:
    """Put back the state :func:`snapshot` took: the filter forgets the step since. Copies
    again, so ``state`` can be restored more than once (a re-planned step)."""
    vars(safety_filter).update({k: _copied(v) for k, v in state.items()})
