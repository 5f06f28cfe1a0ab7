"""Asymmetric actor-critic policies (Pinto et al. 2017): the critic sees the privileged
simulator state, the actor only what the robot measures.

The observation is ``{"obs": actor input, "privileged": simulator truth}``
(:class:`manip_rl.policies.memory.PrivilegedObservation`). :class:`PrivilegedExtractor`
concatenates the two (``obs`` first); the actor's first layer takes the ``obs`` part alone:

- :class:`PrivilegedActorCriticPolicy` (PPO, A2C...): the actor MLP reads the first ``obs_dim``
  features, the critic MLP all of them.
- :class:`PrivilegedLstmPolicy` (sb3-contrib RecurrentPPO): the actor LSTM reads the ``obs``
  part (:class:`ActorInput` slices it), the critic LSTM all of it.

So the actor's modules (``mlp_extractor.policy_net``, ``action_net``, and the actor LSTM) are
exactly those of an ordinary policy on ``obs``: export takes them and leaves the critic behind.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, MlpExtractor
from torch import nn

from manip_rl.policies.memory import OBS_KEY, PRIVILEGED_KEY


def _split_dims(space: gym.Space) -> tuple[int, int]:
    if not isinstance(space, gym.spaces.Dict) or set(space.spaces) != {OBS_KEY, PRIVILEGED_KEY}:
        raise ValueError(
            f"a privileged-critic policy takes the Dict observation {{{OBS_KEY!r}, "
            f"{PRIVILEGED_KEY!r}}} (train with privileged_critic: true), got {space}"
        )
    return int(space[OBS_KEY].shape[0]), int(space[PRIVILEGED_KEY].shape[0])


class PrivilegedExtractor(BaseFeaturesExtractor):
    """``cat(obs, privileged)``: the actor's part first, so ``features[:, :obs_dim]`` is it."""

    def __init__(self, observation_space: gym.Space) -> None:
        obs_dim, priv_dim = _split_dims(observation_space)
        super().__init__(observation_space, obs_dim + priv_dim)
        self.obs_dim = obs_dim

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat(
            (observations[OBS_KEY].flatten(1), observations[PRIVILEGED_KEY].flatten(1)), dim=1
        )


class PrivilegedMlpExtractor(nn.Module):
    """SB3's MlpExtractor with the policy net on the first ``obs_dim`` features and the value
    net on all of them (no shared layers: a shared layer would feed privileged state to the
    actor)."""

    def __init__(
        self, feature_dim: int, obs_dim: int, net_arch: Any, activation_fn: type[nn.Module],
        device: Any = "auto",
    ) -> None:  # fmt: skip
        super().__init__()
        self.obs_dim = obs_dim
        actor = MlpExtractor(obs_dim, net_arch, activation_fn, device)
        critic = MlpExtractor(feature_dim, net_arch, activation_fn, device)
        self.policy_net, self.value_net = actor.policy_net, critic.value_net
        self.latent_dim_pi, self.latent_dim_vf = actor.latent_dim_pi, critic.latent_dim_vf

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self.policy_net(features[:, : self.obs_dim])

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self.value_net(features)


class PrivilegedActorCriticPolicy(ActorCriticPolicy):
    """An ActorCriticPolicy whose critic alone sees ``observation["privileged"]``."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, lr_schedule: Any,
                 **kwargs: Any) -> None:  # fmt: skip
        _split_dims(observation_space)
        kwargs["features_extractor_class"] = PrivilegedExtractor
        kwargs["share_features_extractor"] = True  # a concatenation; the split is below
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = PrivilegedMlpExtractor(
            self.features_dim,
            self.features_extractor.obs_dim,
            self.net_arch,
            self.activation_fn,
            self.device,
        )


class ActorInput(nn.Module):
    """An LSTM fed the first ``obs_dim`` of its input features. ``input_size`` is the width it
    is given (sb3-contrib reshapes sequences by it); ``lstm`` is the actor LSTM itself."""

    def __init__(self, lstm: nn.LSTM, feature_dim: int) -> None:
        super().__init__()
        self.lstm = lstm
        self.input_size = feature_dim
        self.obs_dim = lstm.input_size
        self.hidden_size, self.num_layers = lstm.hidden_size, lstm.num_layers

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> Any:
        return self.lstm(x[..., : self.obs_dim], state)


try:
    from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
except ImportError:  # pragma: no cover - sb3-contrib is a dependency; keep PPO usable without it
    RecurrentActorCriticPolicy = None  # type: ignore[assignment,misc]

if RecurrentActorCriticPolicy is not None:

    class PrivilegedLstmPolicy(RecurrentActorCriticPolicy):  # type: ignore[valid-type,misc]
        """sb3-contrib's recurrent policy with the actor LSTM on ``obs`` and the critic (LSTM or
        linear layer) on ``obs`` and ``privileged``."""

        def __init__(self, observation_space: gym.Space, action_space: gym.Space,
                     lr_schedule: Any, **kwargs: Any) -> None:  # fmt: skip
            obs_dim, _ = _split_dims(observation_space)
            kwargs["features_extractor_class"] = PrivilegedExtractor
            kwargs["share_features_extractor"] = True
            if kwargs.get("shared_lstm"):
                raise ValueError(
                    "policy_kwargs.shared_lstm=true with privileged_critic: a shared LSTM would "
                    "feed the privileged state to the actor; use enable_critic_lstm"
                )
            super().__init__(observation_space, action_space, lr_schedule, **kwargs)
            lstm = self.lstm_actor
            self.lstm_actor = ActorInput(
                nn.LSTM(obs_dim, lstm.hidden_size, num_layers=lstm.num_layers, **self.lstm_kwargs),
                self.features_dim,
            ).to(self.device)
            # The LSTM was replaced after the optimizer was made: make it again.
            self.optimizer = self.optimizer_class(
                self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
            )
