"""PandaPickPlace: grasp a cube and carry it to a goal, half the time in the air."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from manip_rl.envs.push import GOAL_RANGE, OBJECT_CENTER, OBJECT_RANGE, TANH_SCALE, PandaPushEnv

MAX_GOAL_HEIGHT = 0.25  # m above the table (FetchPickAndPlace: 0.45 with a taller reach)
AIR_GOAL_PROBABILITY = 0.5  # as FetchPickAndPlace's target_in_the_air
# Dense reward in the manner of ManiSkill's PickCube: reach the grasping pose, hold the cube in
# both fingers, carry it to the goal while holding it; success pays the most. The TCP sits about
# 5 cm above the fingertips, so the grasping pose is that far above the cube's centre.
GRASP_HEIGHT = 0.045  # m, TCP above the cube's centre in a grasp (measured: 4.3-4.9 cm)
STAGES = 4.0  # reach + grasp + place, each at most 1, divided by this: success pays 1


class PandaPickPlaceEnv(PandaPushEnv):
    """Franka Panda picking a 5 cm cube and placing it at a goal.

    **Description.** As PandaPush, but the goal is in the air (up to 25 cm above the table)
    with probability 0.5, so the cube must be grasped and lifted. The gripper starts open.

    **Action space**, **observation space**: as PandaPush
    (``policy_io.make_layout("pick_place", ...)``).

    **Rewards.** ``sparse``: as PandaPush. ``dense``, in [0, 1], staged as ManiSkill's
    PickCube: ``reach`` = (1 - tanh(5 d_grasp)) / 4, d_grasp the TCP's distance to the grasping
    pose (4.5 cm above the cube's centre); ``grasp`` = 1/4 while both fingers touch the cube;
    ``place`` = (1 - tanh(5 d_goal)) / 4 while grasped; ``success`` tops the sum up to 1 while
    the cube is within the threshold. ``info["is_grasped"]`` and ``info["ee_pos"]`` let
    ``compute_reward`` recompute them for relabelled goals.

    **Episode end.** Never terminates; truncated after 100 steps (4 s at 25 Hz).

    **Version history.** v0: first release.
    """

    task = "pick_place"
    dense_uses_grasp = True

    def _initial_gripper_opening(self) -> float:
        return 0.08

    def _dense_terms(
        self,
        achieved: np.ndarray,
        desired: np.ndarray,
        ee: np.ndarray | None,
        grasped: np.ndarray | None = None,
    ) -> dict[str, np.ndarray]:
        rel = ee - achieved
        rel_z = rel[..., 2] - GRASP_HEIGHT
        d_grasp = np.sqrt(np.sum(rel[..., :2] * rel[..., :2], axis=-1) + rel_z * rel_z)
        diff = achieved - desired
        d_goal = np.sqrt(np.sum(diff * diff, axis=-1))
        held = np.asarray(grasped, dtype=np.float64)
        reach = (1.0 - np.tanh(TANH_SCALE * d_grasp)) / STAGES
        grasp = held / STAGES
        place = held * (1.0 - np.tanh(TANH_SCALE * d_goal)) / STAGES
        success = np.where(d_goal < self.distance_threshold, 1.0 - reach - grasp - place, 0.0)
        return {"reach": reach, "grasp": grasp, "place": place, "success": success}

    def _reset_task(self, options: Mapping) -> None:
        super()._reset_task(options)
        if options.get("goal") is None and self.np_random.uniform() < AIR_GOAL_PROBABILITY:
            self.goal[2] += self.np_random.uniform(0.0, MAX_GOAL_HEIGHT)


__all__ = ["PandaPickPlaceEnv", "OBJECT_CENTER", "OBJECT_RANGE", "GOAL_RANGE"]
