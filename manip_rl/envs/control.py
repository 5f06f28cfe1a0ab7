"""What the tasks' scripted (not learned) controllers share: a Cartesian controller and the
observation reading of the cube tasks. Each task's controller lives in its task module.

Scripted controllers show a task is physically solvable, drive the default demo, and act through
exactly the policy interface (observation dict in, action in [-1, 1] out), so they also run on
the ROS 2 bridge path. Cartesian motions are turned into joint deltas by damped least squares on
the Panda's Jacobian, holding the hand pointing down.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from manip_rl import policy_io
from manip_rl.policy_io import ActionSpec, ObsLayout
from manip_rl.robots.kinematics import Kinematics

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
        self.kin = Kinematics()
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


class CubeController:
    """Shared by the cube tasks: the controller and the observation's TCP, cube and goal."""

    def __init__(self, spec: ActionSpec, layout: ObsLayout) -> None:
        self.ctrl = CartesianController(spec, layout)
        self.s = layout.slices()

    def read(self, obs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        o = obs["observation"]
        ee = np.asarray(o[self.s["ee_pos"]], dtype=np.float64)
        cube = np.asarray(o[self.s["object_pos"]], dtype=np.float64)
        return ee, cube, np.asarray(obs["desired_goal"], dtype=np.float64)
