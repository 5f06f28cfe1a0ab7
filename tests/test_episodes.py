"""The one episode loop (manip_rl/episodes.py) on the real MuJoCo env: batching does not change
an episode, seeds are ``seed + k``, success comes from the last ``info["is_success"]``."""

import gymnasium as gym
import numpy as np
import pytest

import manip_rl  # noqa: F401  (registers the envs)
from manip_rl.envs.registry import scripted_controller
from manip_rl.episodes import run_episodes

ENV = "manip_rl/PandaReach-v0"


def scripted(envs):
    ctrls = [scripted_controller(e) for e in envs]
    return lambda obs: np.stack([c(o) for c, o in zip(ctrls[: len(obs)], obs, strict=True)])


def test_a_batch_runs_the_same_episodes_as_one_env_at_a_time():
    envs = [gym.make(ENV, randomization="default") for _ in range(3)]
    frames = []
    batched = run_episodes(
        envs,
        scripted(envs),
        5,  # a full batch of 3 and a last batch of 2
        seed=40,
        on_step=lambda k, env: frames.append(k),
        at_end=lambda env: env.unwrapped.goal.copy(),
    )
    one = [gym.make(ENV, randomization="default")]
    single = [run_episodes(one, scripted(one), 1, seed=40 + k)[0] for k in range(5)]
    assert [e.index for e in batched] == list(range(5))
    assert [e.seed for e in batched] == [40, 41, 42, 43, 44]
    for b, s in zip(batched, single, strict=True):
        assert b.total_reward == s.total_reward and b.length == s.length
        assert b.success == s.success == (b.info["is_success"] > 0.5)
    # on_step once per step of each episode; at_end sees each episode's own goal.
    assert [frames.count(k) for k in range(5)] == [e.length for e in batched]
    assert len({tuple(e.end) for e in batched}) == 5
    assert all(e.success for e in batched)  # the scripted controller solves Reach


def test_success_is_read_from_the_last_step_only():
    env = gym.make(ENV)
    zero = np.zeros(env.action_space.shape, np.float32)
    (ep,) = run_episodes([env], lambda obs: [zero], 1, seed=3)
    assert not ep.success and ep.info["is_success"] == 0.0
    assert ep.length == env.spec.max_episode_steps


def test_no_envs_is_refused():
    with pytest.raises(ValueError, match="envs is empty"):
        run_episodes([], lambda obs: obs, 1, seed=0)
