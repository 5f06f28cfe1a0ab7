"""PandaPush: push a cube across the table to a goal."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from manip_rl.envs import control
from manip_rl.envs.base import PandaEnv
from manip_rl.envs.spec import TaskSpec

# The cube tasks observe the same fields (PandaPickPlace and PandaLift import these).
CUBE_OBSERVATION = (
    "joint_pos",
    "joint_vel",
    "gripper_opening",
    "ee_pos",
    "object_pos",
    "object_rel_pos",
    "object_quat",
    "prev_action",
)
TASK = TaskSpec(
    name="PandaPush",
    key="push",
    entry_point=f"{__name__}:PandaPushEnv",
    controller=f"{__name__}:ScriptedPush",
    episode_steps=100,  # 4 s at 25 Hz
    has_object=True,
    gripper=True,
    observation=CUBE_OBSERVATION,
    achieved_goal="object_pos",
    # Weights of the dense terms; each term is weight x (1 - tanh(5 d)) / 3 (see the class).
    reward_scales={"approach": 1.0, "place": 1.0},
    randomization_file="randomization/push.yaml",
    train_file="tasks/push/train.yaml",
)

OBJECT_CENTER = np.array([0.50, 0.0])  # m; centre of the object and goal regions
OBJECT_RANGE = 0.10  # m; object xy within +-this of the centre (FetchPush: 0.15)
GOAL_RANGE = 0.15  # m; goal xy within +-this of the centre
# Dense reward in the manner of ManiSkill's PushCube: reach the pushing pose (the TCP just
# behind the cube as seen from the goal, fingertips at the lower half of its side), bring the
# cube to the goal; success pays the most. Each term is 1 - tanh(k d), steep near its target, so
# the last centimetres are worth learning. Unlike PushCube the place term is not gated on being
# at the pose: with sensor noise a 2 cm gate flickered, and PPO settled next to the pose.
PUSH_BEHIND = 0.04  # m behind the cube's centre: the fingers touch it at about 3.5 cm
PUSH_HEIGHT = 0.045  # m above the cube's centre: fingertips at about a third of its height
TANH_SCALE = 5.0  # 1/m


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
    ``desired_goal`` = goal (``TASK.layout(action_dim)``).

    **Rewards.** ``sparse``: -1 until the cube is within the threshold, else 0. ``dense``, in
    [0, 1]: ``approach`` = (1 - tanh(5 d_pose)) / 3, d_pose the TCP's distance to the pushing
    pose (4 cm behind the cube's centre as seen from the goal, 4.5 cm above it); ``place`` =
    (1 - tanh(5 d_goal)) / 3, d_goal the cube's distance to the goal; ``success`` tops the sum up
    to 1 while the cube is within the threshold. Terms in ``info["reward_terms"]``;
    ``info["ee_pos"]`` lets ``compute_reward`` recompute them for relabelled goals.

    **Episode end.** Never terminates; truncated after 100 steps (4 s at 25 Hz).

    **Arguments.** As PandaReach.

    **Version history.** v0: first release.
    """

    task_spec = TASK
    dense_uses_ee = True

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
        return self._object_pos

    def _dense_terms(
        self,
        achieved: np.ndarray,
        desired: np.ndarray,
        ee: np.ndarray | None,
        grasped: np.ndarray | None = None,
        xp: Any = np,
    ) -> dict[str, np.ndarray]:
        to_goal = desired[..., :2] - achieved[..., :2]
        norm = xp.sqrt(xp.sum(to_goal * to_goal, axis=-1, keepdims=True))
        pose_xy = achieved[..., :2] - PUSH_BEHIND * to_goal / xp.maximum(norm, 1e-3)
        dxy = ee[..., :2] - pose_xy
        dz = ee[..., 2] - (achieved[..., 2] + PUSH_HEIGHT)
        d_pose = xp.sqrt(xp.sum(dxy * dxy, axis=-1) + dz * dz)
        diff = achieved - desired
        d_goal = xp.sqrt(xp.sum(diff * diff, axis=-1))
        scales = self.task_spec.reward_scales
        approach = scales["approach"] * (1.0 - xp.tanh(TANH_SCALE * d_pose)) / 3.0
        place = scales["place"] * (1.0 - xp.tanh(TANH_SCALE * d_goal)) / 3.0
        success = xp.where(d_goal < self.distance_threshold, 1.0 - approach - place, 0.0)
        return {"approach": approach, "place": place, "success": success}


class ScriptedPush(control.CubeController):
    """Go behind the cube (seen from the goal) above it, descend, push it to the goal."""

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        ee, cube, goal = self.read(obs)
        to_goal = goal[:2] - cube[:2]
        dist = np.linalg.norm(to_goal)
        u = to_goal / max(dist, 1e-6)
        behind = cube[:2] - control.BEHIND * u
        rel = ee[:2] - cube[:2]
        along, lateral = rel @ u, abs(rel @ np.array([-u[1], u[0]]))
        push_z = cube[2] + control.PUSH_HEIGHT
        if dist < 0.015:
            # At the goal: stay clear of the cube.
            return self.ctrl.action(
                obs, np.array([*(cube[:2] - control.BEHIND * u), push_z + control.HOVER]), -1.0
            )
        if along < -0.02 and lateral < 0.025 and ee[2] < push_z + 0.02:
            # Push: track the cube-goal line a little ahead of the contact point, which both
            # advances the cube and corrects any sideways drift.
            target = np.array([*(cube[:2] - (control.BEHIND - min(0.04, dist)) * u), push_z])
        elif np.linalg.norm(ee[:2] - behind) < 0.02:
            target = np.array([*behind, push_z])
        else:
            target = np.array([*behind, push_z + control.HOVER])
        return self.ctrl.action(obs, target, gripper=-1.0)
