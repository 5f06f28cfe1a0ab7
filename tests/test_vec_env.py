"""ChunkedSubprocVecEnv: several MuJoCo envs per worker process, SB3's VecEnv semantics."""

import numpy as np
import pytest
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from manip_rl.policies import config as cfgmod
from manip_rl.policies.vec_env import ChunkedSubprocVecEnv


def _factories(n: int, flatten: bool = True):
    cfg = cfgmod.load_config("PandaPush", "ppo")
    cfg["flatten_obs"] = flatten
    return [cfgmod.env_factory(cfg, randomized=True, seed=10 + i) for i in range(n)]


@pytest.mark.parametrize("flatten", [True, False])
def test_same_trajectories_as_dummy_vec_env_across_episode_ends(flatten):
    """5 envs over 2 workers (2 + 3) step exactly like SB3's DummyVecEnv, auto-reset included."""
    fns = _factories(5, flatten)
    chunked = ChunkedSubprocVecEnv(fns, n_workers=2)
    dummy = DummyVecEnv(fns)
    try:
        assert sorted(len(c) for c in chunked.chunks) == [2, 3]
        for venv in (chunked, dummy):
            venv.seed(7)
        obs_c, obs_d = chunked.reset(), dummy.reset()
        rng = np.random.default_rng(0)
        ends = 0
        for _ in range(105):  # past the 100-step time limit
            actions = rng.uniform(-1, 1, (5, *chunked.action_space.shape)).astype(np.float32)
            obs_c, rew_c, done_c, info_c = chunked.step(actions)
            obs_d, rew_d, done_d, info_d = dummy.step(actions)
            if flatten:
                np.testing.assert_array_equal(obs_c, obs_d)
            else:
                for key in obs_d:
                    np.testing.assert_array_equal(obs_c[key], obs_d[key])
            np.testing.assert_array_equal(rew_c, rew_d)
            np.testing.assert_array_equal(done_c, done_d)
            for a, b in zip(info_c, info_d, strict=True):
                assert a["is_success"] == b["is_success"]
                assert a["TimeLimit.truncated"] == b["TimeLimit.truncated"]
                if "terminal_observation" in b:
                    ends += 1
                    term_a, term_b = a["terminal_observation"], b["terminal_observation"]
                    if flatten:
                        np.testing.assert_array_equal(term_a, term_b)
                    else:
                        np.testing.assert_array_equal(term_a["observation"], term_b["observation"])
        assert ends == 5  # every env hit its time limit once and was reset
    finally:
        chunked.close()
        dummy.close()


def test_attributes_and_methods_by_index_reach_the_right_env():
    venv = ChunkedSubprocVecEnv(_factories(4), n_workers=2)
    try:
        venv.reset()
        assert venv.get_attr("task") == ["push"] * 4
        # Each env gets its own value back, in the order of the indices asked for.
        for i in range(4):
            venv.set_attr("probe", i * 10, indices=[i])
        assert venv.get_attr("probe", indices=[3, 0, 2]) == [30, 0, 20]
        goals = venv.env_method("get_wrapper_attr", "goal")
        assert len(goals) == 4 and not np.allclose(goals[0], goals[3])
        assert venv.env_is_wrapped(Monitor) == [True] * 4
        assert venv.has_attr("compute_reward") and not venv.has_attr("no_such_attribute")
    finally:
        venv.close()
    assert venv.closed and all(not p.is_alive() for p in venv.processes)
