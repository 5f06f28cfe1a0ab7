"""PPO with the adaptive KL penalty (Schulman et al. 2017, "Proximal Policy Optimization
Algorithms", section 4) as an SB3 ``OnPolicyAlgorithm``.

Each epoch minimizes  -E[r_t(theta) A_t] + beta * KL[pi_old(.|s_t), pi_theta(.|s_t)]  over
minibatches; after the update, the KL measured on the whole batch, d, moves beta:
d > 1.5 d_target -> beta * 2;  d < d_target / 1.5 -> beta / 2 (the paper's constants).
The KL uses the estimator E_old[(r - 1) - log r] with r = pi_theta / pi_old (unbiased and
non-negative, Schulman's "k3"), from the log-probabilities stored at collection time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import (
    ActorCriticPolicy,
    MultiInputActorCriticPolicy,
)
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from stable_baselines3.common.utils import explained_variance
from torch.nn import functional as F

KL_RAISE_ABOVE = 1.5  # beta doubles when d > 1.5 * d_target (Schulman et al. 2017, sec. 4)
KL_FACTOR = 2.0


def update_kl_coef(beta: float, measured_kl: float, target_kl: float) -> float:
    """The paper's rule: double beta when the KL overshoots, halve it when it undershoots."""
    if measured_kl > KL_RAISE_ABOVE * target_kl:
        return beta * KL_FACTOR
    if measured_kl < target_kl / KL_RAISE_ABOVE:
        return beta / KL_FACTOR
    return beta


def kl_estimate(log_prob: th.Tensor, old_log_prob: th.Tensor) -> th.Tensor:
    """Per-sample estimate of KL[pi_old, pi_new] for actions drawn from pi_old."""
    log_ratio = log_prob - old_log_prob
    return th.exp(log_ratio) - 1 - log_ratio


class PPOKL(OnPolicyAlgorithm):
    """PPO with an adaptive KL penalty instead of the clipped ratio.

    :param target_kl: d_target, the KL per update the coefficient steers towards.
    :param kl_coef: beta's initial value (the paper found the start value unimportant).
    :param kl_coef_bounds: beta is kept inside these bounds, so a long run of tiny updates
        cannot drive it to zero.
    Other parameters as SB3's PPO (no clip range).
    """

    policy_aliases = {
        "MlpPolicy": ActorCriticPolicy,
        "MultiInputPolicy": MultiInputActorCriticPolicy,
    }

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        target_kl: float = 0.01,
        kl_coef: float = 1.0,
        kl_coef_bounds: tuple[float, float] = (1e-4, 1e4),
        normalize_advantage: bool = True,
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
        if target_kl <= 0:
            raise ValueError(f"target_kl={target_kl}: must be > 0")
        if kl_coef <= 0:
            raise ValueError(f"kl_coef={kl_coef}: must be > 0")
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            gamma=gamma,
            gae_lambda=gae_lambda,
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
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.target_kl = float(target_kl)
        self.kl_coef = float(kl_coef)
        self.kl_coef_bounds = (float(kl_coef_bounds[0]), float(kl_coef_bounds[1]))
        self.normalize_advantage = normalize_advantage
        if _init_setup_model:
            self._setup_model()

    def train(self) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        pg_losses, kl_losses, value_losses, entropy_losses = [], [], [], []
        for _ in range(self.n_epochs):
            for data in self.rollout_buffer.get(self.batch_size):
                actions = data.actions
                if isinstance(self.action_space, spaces.Discrete):
                    actions = actions.long().flatten()
                values, log_prob, entropy = self.policy.evaluate_actions(data.observations, actions)
                adv = data.advantages
                if self.normalize_advantage and len(adv) > 1:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                ratio = th.exp(log_prob - data.old_log_prob)
                policy_loss = -(adv * ratio).mean()
                kl = kl_estimate(log_prob, data.old_log_prob).mean()
                value_loss = F.mse_loss(data.returns, values.flatten())
                entropy_loss = -th.mean(entropy) if entropy is not None else th.mean(log_prob)
                loss = (
                    policy_loss
                    + self.kl_coef * kl
                    + self.ent_coef * entropy_loss
                    + self.vf_coef * value_loss
                )
                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
                pg_losses.append(policy_loss.item())
                kl_losses.append(kl.item())
                value_losses.append(value_loss.item())
                entropy_losses.append(entropy_loss.item())
            self._n_updates += 1

        measured = self._measure_kl()
        old_coef = self.kl_coef
        lo, hi = self.kl_coef_bounds
        self.kl_coef = float(
            min(max(update_kl_coef(self.kl_coef, measured, self.target_kl), lo), hi)
        )

        self.logger.record("train/policy_gradient_loss", np.mean(pg_losses))
        self.logger.record("train/kl_penalty", np.mean(kl_losses))
        self.logger.record("train/value_loss", np.mean(value_losses))
        self.logger.record("train/entropy_loss", np.mean(entropy_losses))
        self.logger.record("train/kl", measured)
        self.logger.record("train/kl_coef", old_coef)
        self.logger.record(
            "train/explained_variance",
            explained_variance(
                self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()
            ),
        )
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    @th.no_grad()
    def _measure_kl(self) -> float:
        """KL[pi_old, pi_new] over the whole batch after the update."""
        total, n = 0.0, 0
        for data in self.rollout_buffer.get(max(self.batch_size, 1024)):
            actions = data.actions
            if isinstance(self.action_space, spaces.Discrete):
                actions = actions.long().flatten()
            _, log_prob, _ = self.policy.evaluate_actions(data.observations, actions)
            total += kl_estimate(log_prob, data.old_log_prob).sum().item()
            n += len(log_prob)
        return total / max(n, 1)
