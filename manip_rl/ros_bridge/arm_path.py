"""The bridge's trajectory command path without ROS: the policy's joint targets through the
bridge's safety filter with motion limits (:mod:`.safety`, :mod:`manip_rl.robots.motion`), to
an emulated Franka arm (the 1 kHz interpolator and Franka's reflex,
:mod:`manip_rl.robots.reflex`). The training environments run it when made with
``trajectory_robot=...``, so an in-process evaluation moves the arm exactly as ``sim_arm`` does
under ``policy_bridge`` with ``output: trajectory``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from manip_rl.policy_io import ActionSpec
from manip_rl.robots import get_robot
from manip_rl.robots.reflex import EmulatedArm
from manip_rl.ros_bridge import bridge_params, profiles
from manip_rl.ros_bridge.safety import SafetyFilter


class TrajectoryCommandPath:
    """``robot``'s trajectory path for a policy with ``spec``; ``params``: policy_bridge
    parameters (its defaults for the rest; ``output`` is always ``trajectory``)."""

    def __init__(
        self,
        robot: str,
        spec: ActionSpec,
        period: float,
        params: Mapping[str, object] | None = None,
        reflex: bool = True,
    ) -> None:
        values = {**bridge_params.PARAMETERS, **dict(params or {}), "output": "trajectory"}
        unknown = sorted(set(params or {}) - set(bridge_params.PARAMETERS))
        if unknown:
            raise ValueError(f"trajectory_params: {unknown} are no policy_bridge parameters")
        arm = get_robot(robot)
        served = profiles.serving_robot(values.get, arm, spec)
        cfg = bridge_params.safety_config(values.get, served, spec, period)
        motion = profiles.motion_limits(values.get, served, cfg.lower, cfg.upper, period)
        self.safety = SafetyFilter(cfg, motion)
        # The arm's own reflex limits (the FR3's), not the tighter set the bridge plans within.
        self.arm = EmulatedArm(arm, arm.home, check=reflex)

    @property
    def reflexes(self) -> int:
        return self.arm.reflexes

    def reset(self, position: np.ndarray, t: float) -> None:
        """A new episode: the arm at rest at ``position``, the filter enabled afresh."""
        self.arm.reset(position, t)
        self.safety.disable()
        self.safety.enable()

    def command(self, targets: np.ndarray, measured: np.ndarray, t: float) -> None:
        """One control step at time ``t``: filter, plan, send the plan to the arm."""
        decision = self.safety.filter(targets, measured, 0.0, None, now=t)
        if decision.plan is not None:
            self.arm.advance(t)
            t0 = decision.plan.t0
            points = [(t0 + dt, q, v) for dt, q, v in decision.plan.points()]
            self.arm.command_trajectory(t, points)

    def positions(self, times: np.ndarray) -> np.ndarray:
        """The commanded joint positions at each of the increasing ``times`` (one row each)."""
        return self.arm.advance_through(times)
