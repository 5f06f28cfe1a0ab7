"""PandaPickPlace: grasp a cube and carry it to a goal, half the time in the air."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from manip_rl.envs.push import GOAL_RANGE, OBJECT_CENTER, OBJECT_RANGE, PandaPushEnv

REACH_WEIGHT = 0.5  # dense shaping: weight of the TCP-to-cube distance
MAX_GOAL_HEIGHT = 0.25  # m above the table (FetchPickAndPlace: 0.45 with a taller reach)
AIR_GOAL_PROBABILITY = 0.5  # as FetchPickAndPlace's target_in_the_air


class PandaPickPlaceEnv(PandaPushEnv):
    """Franka Panda picking a 5 cm cube and placing it at a goal.

    **Description.** As PandaPush, but the goal is in the air (up to 25 cm above the table)
    with probability 0.5, so the cube must be grasped and lifted. The gripper starts open.

    **Action space**, **observation space**: as PandaPush
    (``policy_io.make_layout("pick_place", ...)``).

    **Rewards.** ``sparse``: as PandaPush. ``dense``: minus the cube-goal distance
    (``goal_distance``), minus 0.5 x the TCP-cube distance (``reach``: the cube is grasped, not
    pushed from behind).

    **Episode end.** Never terminates; truncated after 100 steps (4 s at 25 Hz).

    **Version history.** v0: first release.
    """

    task = "pick_place"

    def _initial_gripper_opening(self) -> float:
        return 0.08

    def _dense_terms(
        self, achieved: np.ndarray, desired: np.ndarray, ee: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        diff, rel = achieved - desired, ee - achieved
        return {
            "goal_distance": -np.sqrt(np.sum(diff * diff, axis=-1)),
            "reach": -REACH_WEIGHT * np.sqrt(np.sum(rel * rel, axis=-1)),
        }

    def _reset_task(self, options: Mapping) -> None:
        super()._reset_task(options)
        if options.get("goal") is None and self.np_random.uniform() < AIR_GOAL_PROBABILITY:
            self.goal[2] += self.np_random.uniform(0.0, MAX_GOAL_HEIGHT)


__all__ = ["PandaPickPlaceEnv", "OBJECT_CENTER", "OBJECT_RANGE", "GOAL_RANGE"]
