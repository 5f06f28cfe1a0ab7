"""REINFORCE (Williams, 1992) as an SB3 ``OnPolicyAlgorithm``: Monte-Carlo returns, one gradient
step per batch of episodes, with the two variance reductions the lecture builds up to PPO:

* ``reward_to_go``: weight each action's log-probability by the return that follows it,
  G_t = sum_{t' >= t} gamma^(t'-t) r_t', instead of the whole episode's return G_0 (causality:
  an action cannot change the rewards before it).
* ``baseline``: subtract b(s_t) from the weight — ``"none"``, ``"mean"`` (the batch's mean return,
  a constant), or ``"value"`` (a learned V(s_t), regressed onto the returns: the step towards an
  actor-critic). Any baseline that does not depend on the action leaves the gradient unbiased.

Returns are Monte-Carlo: they are never bootstrapped, neither at the time limit nor at the end of
a rollout. Episodes here have a fixed length (the time limit), so choose ``n_steps`` as a multiple
of it and every episode in a batch is complete.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import ActorCriticPolicy, MultiInputActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

BASELINES = ("none", "mean", "value")


def monte_carlo_returns(
    rewards: np.ndarray, episode_starts: np.ndarray, gamma: float, reward_to_go: bool = True
) -> np.ndarray:
    """Discounted Monte-Carlo returns of a rollout, arrays shaped (n_steps, n_envs).

    ``episode_starts[t, e]`` is 1 where step t of env e begins an episode. An episode ends before
    the next start or at the end of the rollout (no bootstrap). With ``reward_to_go`` step t gets
    G_t = r_t + gamma * G_{t+1}; without, every step of an episode gets the episode's G_0.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    starts = np.asarray(episode_starts, dtype=bool)
    if rewards.shape != starts.shape:
        raise ValueError(
            f"rewards {rewards.shape} and episode_starts {starts.shape} differ in shape"
        )
    n_steps = rewards.shape[0]
    to_go = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[1:])
    for t in reversed(range(n_steps)):
        # The episode that step t belongs to ends at t when step t+1 starts a new one.
        ends_here = starts[t + 1] if t + 1 < n_steps else np.ones(rewards.shape[1:], dtype=bool)
        running = rewards[t] + gamma * np.where(ends_here, 0.0, running)
        to_go[t] = running
    if reward_to_go:
        return to_go
    # Total return: broadcast each episode's G_0 (the to-go value at its first step) forward.
    total = np.empty_like(to_go)
    current = to_go[0].copy()
    for t in range(n_steps):
        current = np.where(starts[t] | (t == 0), to_go[t], current)
        total[t] = current
    return total


def advantages_from_baseline(returns: np.ndarray, values: np.ndarray, baseline: str) -> np.ndarray:
    """Weights of the log-probabilities: returns minus the baseline."""
    if baseline == "none":
        return returns.copy()
    if baseline == "mean":
        return returns - returns.mean()
    if baseline == "value":
        return returns - values
    raise ValueError(f"baseline={baseline!r}: use one of {BASELINES}")


class _MonteCarloMixin:
    def __init__(self, *args, reward_to_go: bool = True, baseline: str = "value", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reward_to_go = reward_to_go
        self.baseline = baseline

    def compute_returns_and_advantage(self, last_values: th.Tensor, dones: np.ndarray) -> None:
        self.returns = monte_carlo_returns(
            self.rewards, self.episode_starts, self.gamma, self.reward_to_go
        ).astype(np.float32)
        self.advantages = advantages_from_baseline(self.returns, self.values, self.baseline).astype(
            np.float32
        )


class MonteCarloRolloutBuffer(_MonteCarloMixin, RolloutBuffer):
    """A rollout buffer whose returns are Monte-Carlo and whose advantages use a chosen baseline."""


class DictMonteCarloRolloutBuffer(_MonteCarloMixin, DictRolloutBuffer):
    """:class:`MonteCarloRolloutBuffer` for Dict observations."""


class _NoBootstrap:
    def predict_values(self, obs: Any) -> th.Tensor:
        # SB3 calls this only to bootstrap truncated episodes and the rollout's last step;
        # Monte-Carlo returns use neither, so both contribute exactly zero.
        n = (next(iter(obs.values())) if isinstance(obs, dict) else obs).shape[0]
        return th.zeros((n, 1), device=self.device)


class ReinforcePolicy(_NoBootstrap, ActorCriticPolicy):
    """Gaussian MLP policy with a value head that serves only as the learned baseline."""


class MultiInputReinforcePolicy(_NoBootstrap, MultiInputActorCriticPolicy):
    """:class:`ReinforcePolicy` for Dict observations."""


class REINFORCE(OnPolicyAlgorithm):
    """Vanilla policy gradient with Monte-Carlo returns.

    :param reward_to_go: weight log-probabilities by the return after each step (True) or by the
        whole episode's return (False).
    :param baseline: "none", "mean" (batch mean return) or "value" (learned V(s), trained with
        ``vf_coef`` times the mean squared error to the returns).
    :param normalize_advantage: standardize the weights over the batch (off by default: plain
        REINFORCE).
    Other parameters as SB3's A2C; one full-batch gradient step per rollout.
    """

    policy_aliases = {"MlpPolicy": ReinforcePolicy, "MultiInputPolicy": MultiInputReinforcePolicy}

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 1e-3,
        n_steps: int = 1000,
        gamma: float = 0.99,
        reward_to_go: bool = True,
        baseline: str = "value",
        normalize_advantage: bool = False,
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        if baseline not in BASELINES:
            raise ValueError(f"baseline={baseline!r}: use one of {BASELINES}")
        self.reward_to_go = bool(reward_to_go)
        self.baseline = baseline
        self.normalize_advantage = bool(normalize_advantage)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=1.0,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=False,
            sde_sample_freq=-1,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete),
        )
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        dict_obs = isinstance(self.observation_space, spaces.Dict)
        self.rollout_buffer_class = (
            DictMonteCarloRolloutBuffer if dict_obs else MonteCarloRolloutBuffer
        )
        self.rollout_buffer_kwargs = {"reward_to_go": self.reward_to_go, "baseline": self.baseline}
        super()._setup_model()

    def train(self) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        data = next(self.rollout_buffer.get(batch_size=None))  # the whole batch: one step
        actions = data.actions
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()
        values, log_prob, entropy = self.policy.evaluate_actions(data.observations, actions)
        weights = data.advantages
        if self.normalize_advantage and len(weights) > 1:
            weights = (weights - weights.mean()) / (weights.std() + 1e-8)
        policy_loss = -(weights * log_prob).mean()
        entropy_loss = -th.mean(entropy) if entropy is not None else th.mean(log_prob)
        loss = policy_loss + self.ent_coef * entropy_loss
        value_loss = th.zeros(())
        if self.baseline == "value":
            value_loss = F.mse_loss(data.returns, values.flatten())
            loss = loss + self.vf_coef * value_loss
        self.policy.optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self.policy.optimizer.step()
        self._n_updates += 1

        self.logger.record("train/policy_gradient_loss", policy_loss.item())
        self.logger.record("train/value_loss", value_loss.item())
        self.logger.record("train/entropy_loss", entropy_loss.item())
        self.logger.record("train/mean_return", float(self.rollout_buffer.returns.mean()))
        if self.baseline == "value":
            self.logger.record(
                "train/explained_variance",
                explained_variance(
                    self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()
                ),
            )
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
