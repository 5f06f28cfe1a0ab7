"""A task as data: :class:`TaskSpec` holds everything the other parts of manip_rl need to know
about a task (its env ids, scene, observation fields, reward scales, episode length, default
action mode and its YAML files), in the manner of Isaac Lab's tasks registered as config.

Each task module in :mod:`manip_rl.envs.tasks` defines one ``TASK = TaskSpec(...)``;
:mod:`manip_rl.envs.registry` finds them. This module imports only :mod:`manip_rl.policy_io`.
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Mapping

from manip_rl import policy_io

CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs")
ENV_NAMESPACE = "manip_rl"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One manipulation task.

    Two Gymnasium ids are registered from it: ``manip_rl/<name>-v<version>`` (sparse reward)
    and ``manip_rl/<name>Dense-v<version>`` (dense reward).
    """

    name: str
    """The id stem and the training CLI's ``--task``, e.g. ``"PandaLift"``."""
    key: str
    """Short name: the policy file's ``task``, the scene's and the randomization's, e.g.
    ``"lift"``."""
    entry_point: str
    """``"module:Class"`` of the env."""
    episode_steps: int
    """Time limit in control steps (the registration's ``max_episode_steps``)."""
    has_object: bool
    """Whether the scene holds the cube."""
    gripper: bool
    """Whether the action ends with a gripper command."""
    observation: tuple[str, ...]
    """The ``observation`` vector's fields in order (names of ``policy_io.FIELD_NAMES``);
    ``prev_action`` is sized by the action mode."""
    achieved_goal: str
    """The field that is the achieved goal (the desired goal is always ``goal``)."""
    controller: str | None = None
    """``"module:Class"`` of the scripted controller, built as ``Class(action_spec, layout)``."""
    reward_scales: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """The dense reward's weights, by term name (as MuJoCo Playground's ``reward_config``)."""
    default_action_mode: str = policy_io.JOINT_DELTA
    """The action mode ``gym.make`` builds when none is given (training may choose another in
    its train file)."""
    randomization_file: str = ""
    """The default randomization (``randomization="default"``), relative to
    ``manip_rl/configs``."""
    train_file: str = ""
    """Training defaults plus per-algorithm sections, relative to ``manip_rl/configs``."""
    version: int = 0

    def __post_init__(self) -> None:
        if self.default_action_mode not in policy_io.ACTION_MODES:
            raise ValueError(
                f"task {self.name}: default_action_mode={self.default_action_mode!r}; use one "
                f"of {policy_io.ACTION_MODES}"
            )
        # Frozen, like the rest of the spec: no caller can change another's reward weights.
        object.__setattr__(self, "reward_scales", types.MappingProxyType(dict(self.reward_scales)))
        object.__setattr__(self, "observation", tuple(self.observation))
        self.layout(7)  # fails here, at import, on a field name policy_io does not know

    @property
    def env_id(self) -> str:
        """The sparse-reward id."""
        return f"{ENV_NAMESPACE}/{self.name}-v{self.version}"

    @property
    def dense_env_id(self) -> str:
        return f"{ENV_NAMESPACE}/{self.name}Dense-v{self.version}"

    @property
    def env_ids(self) -> tuple[str, str]:
        return self.env_id, self.dense_env_id

    @property
    def randomization_path(self) -> str:
        return os.path.join(CONFIGS_DIR, self.randomization_file)

    @property
    def train_path(self) -> str:
        return os.path.join(CONFIGS_DIR, self.train_file)

    def action_spec(self, mode: str | None = None) -> policy_io.ActionSpec:
        """The action spec in ``mode`` (default: the task's default mode)."""
        return policy_io.make_action_spec(mode or self.default_action_mode, gripper=self.gripper)

    def layout(self, action_dim: int) -> policy_io.ObsLayout:
        """The observation layout for actions of ``action_dim`` values."""
        return policy_io.layout_from_fields(
            self.key, self.observation, self.achieved_goal, action_dim
        )
