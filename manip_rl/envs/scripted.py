"""Scripted (not learned) controllers that solve the tasks from observations alone.

They show the tasks are physically solvable, drive the default demo, and act through exactly the
policy interface (observation dict in, action in [-1, 1] out), so they also run on the ROS 2
bridge path. Cartesian motions are turned into joint deltas by damped least squares on the
Panda's Jacobian, holding the hand pointing down.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from manip_rl import policy_io
from manip_rl.policy_io import ActionSpec, ObsLayout, PandaKinematics

# The TCP (Franka's nominal, 10.34 cm past the flange) sits about 5 cm above the fingertips of
# gymnasium-robotics' finger geometry, so pushing heights are TCP heights over the cube centre.
PUSH_HEIGHT = 0.045  # m, TCP above the cube centre: fingertips at about a third of the cube
HOVER = 0.05  # m above PUSH_HEIGHT while moving around the cube
BEHIND = 0.06  # m behind the cube's centre where the fingertips start a push
GRASP_HEIGHT = 0.035  # m, TCP above the cube centre when closing: fingertips near its bottom
ABOVE = 0.10  # m, TCP above the cube centre before descending to grasp
HELD_OPENING = 0.055  # m; the fingers closed this far onto the 5 cm cube hold it


class CartesianController:
    """Moves the TCP toward a Cartesian target with the hand held vertical."""

    def __init__(self, spec: ActionSpec, layout: ObsLayout, gain: float = 1.0) -> None:
        self.spec, self.layout, self.gain = spec, layout, gain
        self.kin = PandaKinematics()
        self.slices = layout.slices()
        _, self.down = self.kin.ee_pose(policy_io.PANDA_HOME)

    def action(
        self, obs: Mapping[str, np.ndarray], target: np.ndarray, gripper: float = -1.0
    ) -> np.ndarray:
        q = np.asarray(obs["observation"][self.slices["joint_pos"]], dtype=np.float64)
        pos, rot = self.kin.ee_pose(q)
        dx = np.clip(self.gain * (target - pos), -0.04, 0.04)
        if self.spec.mode == policy_io.EE_DELTA:
            arm = dx / self.spec.ee_scale
        else:
            # Orientation error that turns the hand back to its home orientation.
            rot_err = 0.5 * sum(np.cross(rot[:, i], self.down[:, i]) for i in range(3))
            jac = self.kin.ee_jacobian(q, rotation=True)
            dq = policy_io.damped_least_squares(jac, np.concatenate([dx, rot_err]))
            arm = dq / self.spec.joint_scale
        out = np.clip(arm, -1.0, 1.0)
        if self.spec.gripper:
            out = np.append(out, gripper)
        return out.astype(np.float32)


class ScriptedReach:
    """Straight to the goal."""

    def __init__(self, spec: ActionSpec, layout: ObsLayout) -> None:
        self.ctrl = CartesianController(spec, layout)

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.ctrl.action(obs, np.asarray(obs["desired_goal"], dtype=np.float64))


class _CubeController:
    """Shared by the cube tasks: the controller and the observation's TCP, cube and goal."""

    def __init__(self, spec: ActionSpec, layout: ObsLayout) -> None:
        self.ctrl = CartesianController(spec, layout)
        self.s = layout.slices()

    def read(self, obs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        o = obs["observation"]
        ee = np.asarray(o[self.s["ee_pos"]], dtype=np.float64)
        cube = np.asarray(o[self.s["object_pos"]], dtype=np.float64)
        return ee, cube, np.asarray(obs["desired_goal"], dtype=np.float64)


class ScriptedPush(_CubeController):
    """Go behind the cube (seen from the goal) above it, descend, push it to the goal."""

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        ee, cube, goal = self.read(obs)
        to_goal = goal[:2] - cube[:2]
        dist = np.linalg.norm(to_goal)
        u = to_goal / max(dist, 1e-6)
        behind = cube[:2] - BEHIND * u
        rel = ee[:2] - cube[:2]
        along, lateral = rel @ u, abs(rel @ np.array([-u[1], u[0]]))
        push_z = cube[2] + PUSH_HEIGHT
        if dist < 0.015:
            # At the goal: stay clear of the cube.
            return self.ctrl.action(obs, np.array([*(cube[:2] - BEHIND * u), push_z + HOVER]), -1.0)
        if along < -0.02 and lateral < 0.025 and ee[2] < push_z + 0.02:
            # Push: track the cube-goal line a little ahead of the contact point, which both
            # advances the cube and corrects any sideways drift.
            target = np.array([*(cube[:2] - (BEHIND - min(0.04, dist)) * u), push_z])
        elif np.linalg.norm(ee[:2] - behind) < 0.02:
            target = np.array([*behind, push_z])
        else:
            target = np.array([*behind, push_z + HOVER])
        return self.ctrl.action(obs, target, gripper=-1.0)


class ScriptedPickPlace(_CubeController):
    """Above the cube with the gripper open, down, close, carry it to the goal. Stateless: the
    phase is read from the observation (where the TCP is, how far the fingers are closed).
    Measured: 20/20 nominal in either action mode; 70-80% under the default randomization,
    whose sensor noise and latency it does not filter."""

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        ee, cube, goal = self.read(obs)
        opening = float(obs["observation"][self.s["gripper_opening"]][0])
        grasp = cube + [0.0, 0.0, GRASP_HEIGHT]
        off = np.linalg.norm(ee[:2] - cube[:2])
        if off < 0.025 and abs(ee[2] - grasp[2]) < 0.025 and opening < HELD_OPENING:
            return self.ctrl.action(obs, goal + [0.0, 0.0, GRASP_HEIGHT], -1.0)  # carry
        over = off < 0.015
        if over and ee[2] < grasp[2] + 0.01:
            return self.ctrl.action(obs, grasp, -1.0)  # close
        if over:
            return self.ctrl.action(obs, grasp, 1.0)  # descend, open
        return self.ctrl.action(obs, cube + [0.0, 0.0, ABOVE], 1.0)


def scripted_policy(env) -> ScriptedReach | ScriptedPush | ScriptedPickPlace:
    """The scripted controller for an env (its ``unwrapped`` task decides which)."""
    base = env.unwrapped
    controllers = {"reach": ScriptedReach, "push": ScriptedPush, "pick_place": ScriptedPickPlace}
    if base.task not in controllers:
        raise ValueError(f"no scripted controller for task {base.task!r}: {sorted(controllers)}")
    return controllers[base.task](base.action_spec, base.layout)
