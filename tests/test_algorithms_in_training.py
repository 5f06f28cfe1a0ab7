"""The hand-written algorithms inside real SB3 training on a real MuJoCo task."""

import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from manip_rl.policies import config as cfgmod
from manip_rl.policies.ppo_kl import PPOKL, update_kl_coef
from manip_rl.policies.reinforce import REINFORCE, monte_carlo_returns


def _venv(n: int = 2, randomized: bool = False):
    cfg = cfgmod.load_config("PandaReach", "reinforce")
    cfg["randomization"] = "default" if randomized else None
    return DummyVecEnv([cfgmod.env_factory(cfg, randomized=randomized, seed=i) for i in range(n)])


@pytest.mark.parametrize("baseline", ["none", "mean", "value"])
def test_reinforce_buffer_holds_monte_carlo_returns_without_bootstrap(baseline):
    env = _venv()
    model = REINFORCE("MlpPolicy", env, n_steps=100, gamma=0.9, baseline=baseline, seed=0,
                      device="cpu")  # fmt: skip
    model.learn(200)  # two rollouts of two complete 50-step episodes per env
    buf = model.rollout_buffer

    def per_step(a):  # training flattened these (env-major); back to (n_steps, n_envs)
        return a.reshape(2, 100).T

    returns, values, advantages = (
        per_step(buf.returns),
        per_step(buf.values),
        per_step(buf.advantages),
    )
    np.testing.assert_allclose(
        returns, monte_carlo_returns(buf.rewards, buf.episode_starts, 0.9), rtol=1e-5
    )
    # No value was added at the time limit: each episode's rewards sum to what Monitor recorded.
    episode_sums = buf.rewards.reshape(2, 50, 2).sum(axis=1).T.ravel()  # (env, episode)
    recorded = [info["r"] for info in list(model.ep_info_buffer)[-4:]]
    np.testing.assert_allclose(sorted(episode_sums), sorted(recorded), atol=1e-3)
    expected_adv = {
        "none": returns,
        "mean": returns - returns.mean(),
        "value": returns - values,
    }[baseline]
    np.testing.assert_allclose(advantages, expected_adv, rtol=1e-5, atol=1e-5)
    env.close()


def test_ppo_kl_moves_its_coefficient_by_the_rule():
    env = _venv()
    model = PPOKL("MlpPolicy", env, n_steps=50, batch_size=50, n_epochs=4, target_kl=0.001,
                  kl_coef=1.0, learning_rate=3e-3, seed=0, device="cpu")  # fmt: skip
    model.learn(100, log_interval=None)  # one rollout, one update, logs not yet dumped
    logged = model.logger.name_to_value
    before, measured = logged["train/kl_coef"], logged["train/kl"]
    assert before == 1.0 and measured > 0
    assert model.kl_coef == update_kl_coef(before, measured, 0.001)
    assert model.kl_coef != before  # lr 3e-3 over 4 epochs moves far from target 0.001
    env.close()
