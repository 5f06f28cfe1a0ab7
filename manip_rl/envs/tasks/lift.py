"""PandaLift: grasp a cube on the table, lift it at least 10 cm and hold it there."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from manip_rl import policy_io
from manip_rl.envs.base import PandaEnv
from manip_rl.envs.spec import TaskSpec
from manip_rl.envs.tasks.pick_place import ScriptedPickPlace, grasp_and_goal_distances
from manip_rl.envs.tasks.push import CUBE_OBSERVATION, OBJECT_CENTER, OBJECT_RANGE, TANH_SCALE

LIFT_HEIGHT = 0.10  # m: the cube's bottom at least this far above the table counts as lifted
HOLD_STEPS = 10  # control steps (0.4 s at 25 Hz) the cube must stay lifted and grasped
TASK = TaskSpec(
    name="PandaLift",
    key="lift",
    entry_point=f"{__name__}:PandaLiftEnv",
    controller=f"{__name__}:ScriptedLift",
    episode_steps=100,  # 4 s at 25 Hz
    has_object=True,
    gripper=True,
    observation=CUBE_OBSERVATION,
    achieved_goal="object_pos",
    # Dense reward weights, summing to 1 (as MuJoCo Playground's PandaPickCube reward_config).
    reward_scales={"reach": 0.25, "grasp": 0.25, "lift": 0.5},
    default_action_mode=policy_io.EE_DELTA,
    randomization_file="randomization/lift.yaml",
    train_file="tasks/lift/train.yaml",
)


class PandaLiftEnv(PandaEnv):
    """Franka Panda lifting a 5 cm cube off the table (as Isaac Lab's Franka lift and MuJoCo
    Playground's PandaPickCube).

    **Description.** The cube starts on the table within +-10 cm of (0.5, 0) m, the gripper
    open. The goal is the point ``LIFT_HEIGHT + distance_threshold`` (15 cm) straight above the
    cube's resting centre, so a cube within ``distance_threshold`` (5 cm) of it has its bottom
    at least ``LIFT_HEIGHT`` (10 cm) above the table. **Success** (``info["is_success"]``,
    from the true state): the cube has been within the threshold of the goal *and* between
    both fingers for the last ``HOLD_STEPS`` (10) consecutive steps, 0.4 s: lifted and held,
    not thrown.

    **Action space.** By default ``action_mode="ee_delta"``: ``Box(-1, 1, (4,))``, a TCP
    displacement of up to 3 cm per step and the gripper opening (-1 closed .. 1 open, 8 cm).
    ``action_mode="joint_delta"``: ``Box(-1, 1, (8,))``, as PandaPush.

    **Observation space.** As PandaPush (``TASK.layout(action_dim)``): ``observation`` = joint
    positions, joint velocities, gripper opening, TCP position, cube position, cube minus TCP,
    cube quaternion, previous action; ``achieved_goal`` = cube position; ``desired_goal`` = the
    lift target.

    **Rewards.** ``sparse``: -1 until the cube is within the threshold of the goal, else 0 (a
    per-step reward; success also asks for the hold). ``dense``, in [0, 1], weights in
    ``TASK.reward_scales``: ``reach`` = 0.25 (1 - tanh(5 d_grasp)), d_grasp the TCP's distance
    to the grasping pose (4.5 cm above the cube's centre); ``grasp`` = 0.25 while both fingers
    touch the cube; ``lift`` = 0.5 (1 - tanh(5 d_goal)) while grasped, d_goal the cube's
    distance to the goal. Terms in ``info["reward_terms"]``; ``info["ee_pos"]`` and
    ``info["is_grasped"]`` let ``compute_reward`` recompute them for relabelled goals.

    **Episode end.** Never terminates; truncated after 100 steps (4 s at 25 Hz).

    **Arguments.** As PandaReach; ``action_mode`` defaults to ``"ee_delta"``. Reset options
    ``object_xy`` (the cube's start).

    **Version history.** v0: first release.
    """

    success_hold_steps = HOLD_STEPS  # the batched backend's success test reads it

    task_spec = TASK
    dense_uses_ee = True
    dense_uses_grasp = True

    def _initial_gripper_opening(self) -> float:
        return policy_io.GRIPPER_MAX_OPENING

    def _reset_task(self, options: Mapping) -> None:
        obj = options.get("object_xy")
        obj = (
            np.asarray(obj, float)
            if obj is not None
            else OBJECT_CENTER + self.np_random.uniform(-OBJECT_RANGE, OBJECT_RANGE, 2)
        )
        self._set_object(obj)
        rest = float(self.model.geom_size[self.ids.object_geom, 2])  # randomized cube size
        self.goal = np.array([*obj, rest + LIFT_HEIGHT + self.distance_threshold])
        self._held_steps = 0

    def _achieved_true(self) -> np.ndarray:
        return self._object_pos

    def _after_physics(self) -> None:
        lifted = super()._is_success()  # the true cube within the threshold of the goal
        self._held_steps = self._held_steps + 1 if lifted and self.is_grasped() else 0

    def _is_success(self) -> bool:
        return self._held_steps >= HOLD_STEPS

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
        return {
            "reach": scales["reach"] * (1.0 - xp.tanh(TANH_SCALE * d_grasp)),
            "grasp": scales["grasp"] * held,
            "lift": scales["lift"] * held * (1.0 - xp.tanh(TANH_SCALE * d_goal)),
        }


class ScriptedLift(ScriptedPickPlace):
    """Above the cube with the gripper open, down, close, carry it up to the goal and hold it
    there: PandaPickPlace's scripted controller, whose goal here is the lift target."""
