"""A policy file is easy to use right: ``LoadedPolicy.make_env()`` builds the env the file
describes and ``act`` takes that env's dict observation as well as the flat vector."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import manip_rl
from manip_rl import policy_io
from manip_rl.export import load_policy

PUSH = Path(manip_rl.__file__).parent / "policies" / "pretrained" / "panda_push.pt"


@pytest.fixture(scope="module")
def push_policy():
    return load_policy(PUSH)


def test_make_env_builds_the_files_task_in_its_action_mode(push_policy):
    env = push_policy.make_env()
    base = env.unwrapped
    # The shipped Push policy acts in TCP deltas; gym.make(env_id) alone builds joint deltas.
    assert base.action_spec.mode == push_policy.action_spec.mode == policy_io.EE_DELTA
    assert env.action_space.shape == (push_policy.act_dim,)
    assert base.layout.flat_dim == push_policy.obs_dim
    assert env.spec.id == push_policy.env_id and env.spec.max_episode_steps == 100
    assert base.randomization_config is None
    env.close()
    env = push_policy.make_env(randomization="default", max_episode_steps=20)
    assert env.unwrapped.randomization_config is not None
    assert env.spec.max_episode_steps == 20
    env.close()


def test_act_on_the_dict_equals_act_on_the_flat_vector(push_policy):
    env = push_policy.make_env(randomization="default")
    obs, _ = env.reset(seed=5)
    for _ in range(5):
        flat = policy_io.flatten_observation(obs)
        a_dict, a_flat = push_policy.act(obs), push_policy.act(flat)
        np.testing.assert_array_equal(a_dict, a_flat)
        obs, *_ = env.step(a_dict)
    batch = {k: np.stack([v, v]) for k, v in obs.items()}
    np.testing.assert_array_equal(
        push_policy.act(batch), push_policy.act(np.stack([policy_io.flatten_observation(obs)] * 2))
    )
    env.close()


def test_a_dict_from_another_tasks_env_is_refused(push_policy):
    import gymnasium as gym

    env = gym.make("manip_rl/PandaReach-v0")
    obs, _ = env.reset(seed=0)
    with pytest.raises(
        ValueError, match=r"observation\['achieved_goal'\]|observation\['observation'\]"
    ):
        push_policy.act(obs)
    with pytest.raises(ValueError, match="lacks"):
        push_policy.act({"observation": obs["observation"]})
    env.close()


def test_the_shipped_push_policy_solves_its_task_through_make_env_and_dict_obs(push_policy):
    env = push_policy.make_env(randomization="default")
    successes = 0
    for ep in range(6):
        obs, _ = env.reset(seed=3_000_000 + ep)
        truncated = terminated = False
        while not (truncated or terminated):
            obs, _, terminated, truncated, info = env.step(push_policy.act(obs))
        successes += int(info["is_success"])
    env.close()
    # Push scores 81% randomized (docs/training.md); the threshold sits well below.
    assert successes >= 3, f"{successes}/6"
