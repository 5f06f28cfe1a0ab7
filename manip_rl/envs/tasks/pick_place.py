"""PandaPickPlace: grasp a cube and carry it to a goal, half the time in the air."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mujoco
import numpy as np

from manip_rl import policy_io
from manip_rl.envs import control
from manip_rl.envs.spec import TaskSpec
from manip_rl.envs.tasks.push import (
    CUBE_OBSERVATION,
    GOAL_RANGE,
    OBJECT_CENTER,
    OBJECT_RANGE,
    TANH_SCALE,
    PandaPushEnv,
)

MAX_GOAL_HEIGHT = 0.25  # m above the table (FetchPickAndPlace: 0.45 with a taller reach)
AIR_GOAL_PROBABILITY = 0.5  # as FetchPickAndPlace's target_in_the_air
# Dense reward in the manner of ManiSkill's PickCube: reach the grasping pose, hold the cube in
# both fingers, carry it to the goal while holding it; success pays the most. The TCP sits about
# 5 cm above the fingertips, so the grasping pose is that far above the cube's centre.
GRASP_HEIGHT = 0.045  # m, TCP above the cube's centre in a grasp (measured: 4.3-4.9 cm)
STAGES = 4.0  # reach + grasp + place, each at most 1, divided by this: success pays 1
TASK = TaskSpec(
    name="PandaPickPlace",
    key="pick_place",
    entry_point=f"{__name__}:PandaPickPlaceEnv",
    controller=f"{__name__}:ScriptedPickPlace",
    episode_steps=100,  # 4 s at 25 Hz
    has_object=True,
    gripper=True,
    observation=CUBE_OBSERVATION,
    achieved_goal="object_pos",
    # Weights of the dense terms; each term is weight x its stage value / STAGES (see the class).
    reward_scales={"reach": 1.0, "grasp": 1.0, "place": 1.0},
    randomization_file="randomization/pick_place.yaml",
    train_file="tasks/pick_place/train.yaml",
)
# Grasped starts (a training aid, off by default): the arm is moved by inverse kinematics so the
# TCP is GRASP_HEIGHT above the cube lifted to a random height, the fingers are closed on it, and
# the physics settles this long before the episode begins.
IK_ITERATIONS = 50
SETTLE_STEPS = 45  # physics steps (0.12 s)
_ARM_LOWER = policy_io.PANDA_JOINT_LOWER - policy_io.SIM_JOINT_OFFSETS  # MuJoCo's joint coords
_ARM_UPPER = policy_io.PANDA_JOINT_UPPER - policy_io.SIM_JOINT_OFFSETS


def grasp_and_goal_distances(
    ee: np.ndarray, achieved: np.ndarray, desired: np.ndarray, xp: Any = np
) -> tuple[np.ndarray, np.ndarray]:
    """(TCP to its grasp point above the cube, cube to goal) in m, for batches of positions
    (``xp``: as for ``PandaEnv._dense_terms``)."""
    rel = ee - achieved
    rel_z = rel[..., 2] - GRASP_HEIGHT
    d_grasp = xp.sqrt(xp.sum(rel[..., :2] * rel[..., :2], axis=-1) + rel_z * rel_z)
    diff = achieved - desired
    return d_grasp, xp.sqrt(xp.sum(diff * diff, axis=-1))


class PandaPickPlaceEnv(PandaPushEnv):
    """Franka Panda picking a 5 cm cube and placing it at a goal.

    **Description.** As PandaPush, but the goal is in the air (up to 25 cm above the table)
    with probability 0.5, so the cube must be grasped and lifted. The gripper starts open.

    **Action space**, **observation space**: as PandaPush
    (``TASK.layout(action_dim)``).

    **Rewards.** ``sparse``: as PandaPush. ``dense``, in [0, 1], staged as ManiSkill's
    PickCube: ``reach`` = (1 - tanh(5 d_grasp)) / 4, d_grasp the TCP's distance to the grasping
    pose (4.5 cm above the cube's centre); ``grasp`` = 1/4 while both fingers touch the cube;
    ``place`` = (1 - tanh(5 d_goal)) / 4 while grasped; ``success`` tops the sum up to 1 while
    the cube is within the threshold. ``info["is_grasped"]`` and ``info["ee_pos"]`` let
    ``compute_reward`` recompute them for relabelled goals.

    **Episode end.** Never terminates; truncated after 100 steps (4 s at 25 Hz).

    **Grasped starts.** ``grasped_start=p`` (default 0) starts a share ``p`` of the episodes
    with the cube already between the closed fingers, lifted to a random height up to
    ``MAX_GOAL_HEIGHT``: the trick of the HER paper (Andrychowicz et al. 2017), which started
    half of its FetchPickAndPlace training episodes from a grasped state. It is a training aid;
    evaluations use ``p = 0``. Episodes with ``options["object_xy"]`` never start grasped.

    **Version history.** v0: first release.
    """

    task_spec = TASK
    dense_uses_grasp = True

    def __init__(self, *args, grasped_start: float = 0.0, **kwargs) -> None:
        grasped_start = float(grasped_start)
        if not 0.0 <= grasped_start <= 1.0:
            raise ValueError(
                f"grasped_start={grasped_start}: it is the share of episodes that start with "
                "the cube grasped, a number in [0, 1]"
            )
        super().__init__(*args, **kwargs)
        self.grasped_start = grasped_start

    def _initial_gripper_opening(self) -> float:
        return 0.08

    def _dense_terms(
        self,
        achieved: np.ndarray,
        desired: np.ndarray,
        ee: np.ndarray | None,
        grasped: np.ndarray | None = None,
        xp: Any = np,
    ) -> dict[str, np.ndarray]:
        d_grasp, d_goal = grasp_and_goal_distances(ee, achieved, desired, xp)
        held = xp.asarray(grasped, dtype=xp.float64)
        scales = self.task_spec.reward_scales
        reach = scales["reach"] * (1.0 - xp.tanh(TANH_SCALE * d_grasp)) / STAGES
        grasp = scales["grasp"] * held / STAGES
        place = scales["place"] * held * (1.0 - xp.tanh(TANH_SCALE * d_goal)) / STAGES
        success = xp.where(d_goal < self.distance_threshold, 1.0 - reach - grasp - place, 0.0)
        return {"reach": reach, "grasp": grasp, "place": place, "success": success}

    def _reset_task(self, options: Mapping) -> None:
        super()._reset_task(options)
        if options.get("goal") is None and self.np_random.uniform() < AIR_GOAL_PROBABILITY:
            self.goal[2] += self.np_random.uniform(0.0, MAX_GOAL_HEIGHT)
        # Drawn only when enabled, so that p = 0 leaves every seed's episode as it was.
        if (
            self.grasped_start > 0.0
            and options.get("object_xy") is None
            and self.np_random.uniform() < self.grasped_start
        ):
            self._start_grasped(self.np_random.uniform(0.0, MAX_GOAL_HEIGHT))

    def _start_grasped(self, lift: float) -> None:
        """Move the TCP to the grasping pose of the cube raised by ``lift`` (m), put the cube
        there between the fingers, close them and let the physics settle."""
        m, d, ids = self.model, self.data, self.ids
        o = ids.object_qpos
        target = d.qpos[o : o + 3] + (0.0, 0.0, lift + GRASP_HEIGHT)
        arm = ids.arm_qpos
        for _ in range(IK_ITERATIONS):
            mujoco.mj_kinematics(m, d)
            err = target - d.site_xpos[ids.ee_site]
            if err @ err < 1e-8:
                break
            mujoco.mj_comPos(m, d)
            mujoco.mj_jacSite(m, d, self._jacp, None, ids.ee_site)
            dq = policy_io.damped_least_squares(self._jacp[:, ids.arm_dof], err)
            d.qpos[arm] = np.minimum(np.maximum(d.qpos[arm] + dq, _ARM_LOWER), _ARM_UPPER)
        mujoco.mj_kinematics(m, d)
        d.qpos[o : o + 3] = d.site_xpos[ids.ee_site] - (0.0, 0.0, GRASP_HEIGHT)
        d.qpos[o + 3 : o + 7] = (1.0, 0.0, 0.0, 0.0)
        d.qpos[ids.finger_qpos] = m.geom_size[ids.object_geom, 0]  # each finger on a face
        d.ctrl[ids.arm_actuators] = d.qpos[arm]
        d.ctrl[ids.finger_actuators] = 0.0  # closed: the fingers squeeze the cube
        mujoco.mj_step(m, d, nstep=SETTLE_STEPS)


class ScriptedPickPlace(control.CubeController):
    """Above the cube with the gripper open, down, close, carry it to the goal. Stateless: the
    phase is read from the observation (where the TCP is, how far the fingers are closed).
    Measured: 20/20 nominal in either action mode; 70-80% under the default randomization,
    whose sensor noise and latency it does not filter."""

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        ee, cube, goal = self.read(obs)
        opening = float(obs["observation"][self.s["gripper_opening"]][0])
        grasp = cube + [0.0, 0.0, control.GRASP_HEIGHT]
        off = np.linalg.norm(ee[:2] - cube[:2])
        if off < 0.025 and abs(ee[2] - grasp[2]) < 0.025 and opening < control.HELD_OPENING:
            return self.ctrl.action(obs, goal + [0.0, 0.0, control.GRASP_HEIGHT], -1.0)  # carry
        over = off < 0.015
        if over and ee[2] < grasp[2] + 0.01:
            return self.ctrl.action(obs, grasp, -1.0)  # close
        if over:
            return self.ctrl.action(obs, grasp, 1.0)  # descend, open
        return self.ctrl.action(obs, cube + [0.0, 0.0, control.ABOVE], 1.0)


__all__ = [
    "TASK",
    "PandaPickPlaceEnv",
    "ScriptedPickPlace",
    "OBJECT_CENTER",
    "OBJECT_RANGE",
    "GOAL_RANGE",
]
