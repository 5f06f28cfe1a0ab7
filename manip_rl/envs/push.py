"""PandaPush: push a cube across the table to a goal."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from manip_rl.envs.base import PandaEnv

OBJECT_CENTER = np.array([0.50, 0.0])  # m; centre of the object and goal regions
OBJECT_RANGE = 0.10  # m; object xy within +-this of the centre (FetchPush: 0.15)
GOAL_RANGE = 0.15  # m; goal xy within +-this of the centre
REACH_WEIGHT = 0.5  # dense shaping: weight of the TCP-to-object distance


class PandaPushEnv(PandaEnv):
    """Franka Panda pushing a 5 cm cube to a goal on the table.

    **Description.** A cube starts on the table within +-10 cm of (0.5, 0) m; the goal lies on
    the table within +-15 cm of the same point, at least ``distance_threshold`` from the cube.
    Success: the cube's centre within 5 cm of the goal.

    **Action space.** ``Box(-1, 1, (8,))``: seven joint-position deltas (0.1 rad per unit, as in
    PandaReach) and the gripper opening (-1 closed .. 1 open, 8 cm). ``action_mode="ee_delta"``:
    ``Box(-1, 1, (4,))``, TCP displacement (3 cm per unit) and gripper.

    **Observation space.** GoalEnv dict: ``observation`` = joint positions (7), joint velocities
    (7), gripper opening (1), TCP position (3), cube position (3), cube minus TCP (3), cube
    quaternion (4, w x y z), previous action; ``achieved_goal`` = cube position;
    ``desired_goal`` = goal (``policy_io.make_layout("push", ...)``).

    **Rewards.** ``sparse``: -1 until the cube is within the threshold, else 0. ``dense``: minus
    the cube-goal distance, minus 0.5 x the TCP-cube distance (``reach`` term, kept in
    ``info["reward_terms"]`` so ``compute_reward`` can add it after goal relabelling).

    **Episode end.** Never terminates; truncated after 100 steps (4 s at 25 Hz).

    **Arguments.** As PandaReach.

    **Version history.** v0: first release.
    """

    task = "push"
    has_gripper = True

    @property
    def goal_free_terms(self) -> tuple[str, ...]:
        return ("reach",) if self.reward_type == "dense" else ()

    def _initial_gripper_opening(self) -> float:
        return 0.0

    def _reset_task(self, options: Mapping) -> None:
        rng = self.np_random
        obj = options.get("object_xy")
        obj = (
            np.asarray(obj, float)
            if obj is not None
            else OBJECT_CENTER + rng.uniform(-OBJECT_RANGE, OBJECT_RANGE, 2)
        )
        self._set_object(obj)
        goal = options.get("goal")
        if goal is None:
            while True:
                goal_xy = OBJECT_CENTER + rng.uniform(-GOAL_RANGE, GOAL_RANGE, 2)
                if np.linalg.norm(goal_xy - obj) > self.distance_threshold:
                    break
            goal = (*goal_xy, self.model.geom_size[self.ids.object_geom, 2])
        self.goal = np.asarray(goal, float)

    def _achieved_true(self) -> np.ndarray:
        o = self.ids.object_qpos
        return self.data.qpos[o : o + 3]

    def _goal_free_reward_terms(self, obs: Mapping[str, np.ndarray]) -> dict[str, float]:
        if self.reward_type != "dense":
            return {}
        rel = obs["observation"][self.obs_slices["object_rel_pos"]]
        return {"reach": -REACH_WEIGHT * float(np.sqrt(rel @ rel))}
