"""PandaReach: move the end effector to a point in space."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from manip_rl.envs.base import PandaEnv
from manip_rl.envs.control import CartesianController
from manip_rl.envs.spec import TaskSpec
from manip_rl.policy_io import ActionSpec, ObsLayout

TASK = TaskSpec(
    name="PandaReach",
    key="reach",
    entry_point=f"{__name__}:PandaReachEnv",
    controller=f"{__name__}:ScriptedReach",
    episode_steps=50,  # 2 s at 25 Hz
    has_object=False,
    gripper=False,
    observation=("joint_pos", "joint_vel", "ee_pos", "prev_action"),
    achieved_goal="ee_pos",
    randomization_file="randomization/reach.yaml",
    train_file="tasks/reach/train.yaml",
)

# Goal box in front of the robot (m, base frame): reachable with the hand pointing down, the
# fingertips (about 5 cm below the TCP) above the table.
GOAL_LOW = np.array([0.30, -0.25, 0.10])
GOAL_HIGH = np.array([0.60, 0.25, 0.40])


class PandaReachEnv(PandaEnv):
    """Franka Panda reaching.

    **Description.** The arm starts near Franka's ready pose (each joint within +-0.05 rad) and
    must bring its tool centre point (between the fingertips) within ``distance_threshold``
    (5 cm) of a goal sampled uniformly in the box ``GOAL_LOW``..``GOAL_HIGH``.

    **Action space.** ``Box(-1, 1, (7,))`` joint-position deltas: the target of each joint is
    its measured position + 0.1 rad x action, clipped to the joint limits (``policy_io``). With
    ``action_mode="ee_delta"``: ``Box(-1, 1, (3,))``, a TCP displacement of up to 3 cm per step
    turned into joint targets by damped least squares.

    **Observation space.** GoalEnv dict: ``observation`` = joint positions (7, rad, Franka
    convention), joint velocities (7, rad/s), TCP position (3, m), previous action;
    ``achieved_goal`` = TCP position; ``desired_goal`` = goal. The layout is
    ``TASK.layout(action_dim)``.

    **Rewards.** ``sparse``: -1 while the TCP is farther than the threshold, else 0.
    ``dense``: minus the distance in metres. Terms in ``info["reward_terms"]``.

    **Episode end.** Never terminates; truncated after 50 steps (2 s at 25 Hz) by the
    registration's time limit. ``info["is_success"]`` uses the true (noise-free) state.

    **Arguments.** ``reward_type``, ``action_mode``, ``randomization`` (None, "default", a YAML
    path, a dict or a ``RandomizationConfig``), ``render_mode`` ("rgb_array"),
    ``distance_threshold``.

    **Version history.** v0: first release.
    """

    task_spec = TASK

    def _reset_task(self, options: Mapping) -> None:
        goal = options.get("goal")
        self.goal = (
            np.asarray(goal, float)
            if goal is not None
            else self.np_random.uniform(GOAL_LOW, GOAL_HIGH)
        )

    def _achieved_true(self) -> np.ndarray:
        return self._ee_xpos


class ScriptedReach:
    """Straight to the goal."""

    def __init__(self, spec: ActionSpec, layout: ObsLayout) -> None:
        self.ctrl = CartesianController(spec, layout)

    def __call__(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.ctrl.action(obs, np.asarray(obs["desired_goal"], dtype=np.float64))
