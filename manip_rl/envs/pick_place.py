"""PandaPickPlace: grasp a cube and carry it to a goal, half the time in the air."""

from __future__ import annotations

from collections.abc import Mapping

from manip_rl.envs.push import GOAL_RANGE, OBJECT_CENTER, OBJECT_RANGE, PandaPushEnv

MAX_GOAL_HEIGHT = 0.25  # m above the table (FetchPickAndPlace: 0.45 with a taller reach)
AIR_GOAL_PROBABILITY = 0.5  # as FetchPickAndPlace's target_in_the_air


class PandaPickPlaceEnv(PandaPushEnv):
    """Franka Panda picking a 5 cm cube and placing it at a goal.

    **Description.** As PandaPush, but the goal is in the air (up to 25 cm above the table)
    with probability 0.5, so the cube must be grasped and lifted. The gripper starts open.

    **Action space**, **observation space**, **rewards**: as PandaPush
    (``policy_io.make_layout("pick_place", ...)``).

    **Episode end.** Never terminates; truncated after 100 steps (4 s at 25 Hz).

    **Version history.** v0: first release.
    """

    task = "pick_place"

    def _initial_gripper_opening(self) -> float:
        return 0.08

    def _reset_task(self, options: Mapping) -> None:
        super()._reset_task(options)
        if options.get("goal") is None and self.np_random.uniform() < AIR_GOAL_PROBABILITY:
            self.goal[2] += self.np_random.uniform(0.0, MAX_GOAL_HEIGHT)


__all__ = ["PandaPickPlaceEnv", "OBJECT_CENTER", "OBJECT_RANGE", "GOAL_RANGE"]
