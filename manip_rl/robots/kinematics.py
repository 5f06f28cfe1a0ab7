"""Forward kinematics and the TCP Jacobian of a Franka arm, from its MuJoCo model.

Robot convention in and out: the simulation model's joint offsets are applied here and nowhere
else on the robot side. MuJoCo is imported when a :class:`Kinematics` is built, so code that
only reads a robot description never loads it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from manip_rl.robots.description import RobotDescription
from manip_rl.robots.franka import PANDA
from manip_rl.robots.model import SIM_ARM_JOINTS, TCP_SITE, arm_xml


class Kinematics:
    """TCP pose and Jacobian of ``robot`` (the Panda by default; the FR3 shares its kinematics)."""

    def __init__(self, robot: RobotDescription = PANDA) -> None:
        import mujoco

        self._mj = mujoco
        self.robot = robot
        self.model = mujoco.MjModel.from_xml_string(arm_xml())
        self.data = mujoco.MjData(self.model)
        joints = [self.model.joint(n) for n in SIM_ARM_JOINTS]
        self._qpos = np.array([int(j.qposadr[0]) for j in joints])
        self._dof = np.array([int(j.dofadr[0]) for j in joints])
        self._site = self.model.site(TCP_SITE).id
        self._offsets = np.asarray(robot.sim_joint_offsets)
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))
        # The joint positions the model was last posed at, and whether mj_comPos followed: a
        # control step asks for the TCP and the Jacobian of one state several times.
        self._posed: np.ndarray | None = None
        self._com_done = False

    def _set(self, joint_pos: Sequence[float]) -> None:
        q = np.asarray(joint_pos, dtype=np.float64)
        if self._posed is not None and np.array_equal(q, self._posed):
            return
        self.data.qpos[self._qpos] = q - self._offsets
        self._mj.mj_kinematics(self.model, self.data)
        self._posed, self._com_done = q.copy(), False

    def ee_pos(self, joint_pos: Sequence[float]) -> np.ndarray:
        """TCP position (m, base frame)."""
        self._set(joint_pos)
        return self.data.site_xpos[self._site].copy()

    def ee_pose(self, joint_pos: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """TCP position and 3x3 rotation matrix."""
        self._set(joint_pos)
        s = self._site
        return self.data.site_xpos[s].copy(), self.data.site_xmat[s].reshape(3, 3).copy()

    def ee_jacobian(self, joint_pos: Sequence[float], rotation: bool = False) -> np.ndarray:
        """3x7 position Jacobian of the TCP (6x7 with ``rotation``: angular rows below)."""
        self._set(joint_pos)
        if not self._com_done:
            self._mj.mj_comPos(self.model, self.data)
            self._com_done = True
        self._mj.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self._site)
        if rotation:
            return np.vstack([self._jacp[:, self._dof], self._jacr[:, self._dof]])
        return self._jacp[:, self._dof].copy()
