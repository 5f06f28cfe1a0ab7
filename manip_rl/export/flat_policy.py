"""The module a policy file holds, built from an SB3 actor: :class:`FlatPolicy` (normalizer,
actor MLP, deterministic action head) and :class:`FusedMLP`, the fast form of its MLP.

``manip_rl.export.build`` makes one and the writers script it; loading a file needs neither
class (a TorchScript file carries its own code).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class FusedMLP(nn.Module):
    """An SB3 MLP actor (Linear, activation, ..., Linear) as one chain of ``addmm`` calls with
    in-place activations: at batch 1 each op and each allocation costs, and this form measured
    about 5% faster than the module chain after ``optimize_for_inference`` (which it therefore
    skips, see :func:`load_policy`). It holds SB3's Linear layers themselves.
    """

    __constants__ = ["tanh"]

    def __init__(self, linears: list[nn.Linear], tanh: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(linears)
        self.tanh = tanh
        self.n_hidden = len(linears) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = torch.addmm(layer.bias, x, layer.weight.t())
            if i < self.n_hidden:
                x = x.tanh_() if self.tanh else x.relu_()
        return x

    @staticmethod
    def of(actor: nn.Module) -> FusedMLP | None:
        """The fused form of ``Sequential(Sequential(Linear, act, ...), Linear)`` with one
        activation throughout (Tanh or ReLU); None for anything else."""
        mods = [m for part in actor for m in (part if isinstance(part, nn.Sequential) else [part])]
        linears, acts = mods[0::2], mods[1::2]
        kinds = {type(a) for a in acts}
        if (
            not all(type(m) is nn.Linear for m in linears)
            or len(linears) != len(acts) + 1
            or len(kinds) > 1
            or not kinds <= {nn.Tanh, nn.ReLU}
        ):
            return None
        return FusedMLP(linears, tanh=kinds == {nn.Tanh} or not kinds)


class FlatPolicy(nn.Module):
    """What a policy file holds: normalizer, the actor MLP and the deterministic action head.

    Normalization runs in float64, as VecNormalize does in numpy, so that observations far from
    the training statistics (where ``(obs - mean) / std`` amplifies rounding) give the same
    clipped input as in training; the MLP runs in float32, as SB3's policy does. It is written
    as ``obs * scale + shift`` (``scale = 1 / sqrt(var + eps)``, ``shift = -mean * scale``), one
    fused op, since at batch 1 each op costs microseconds.
    """

    # Folded by torch.jit.freeze, so the branches cost nothing at run time.
    __constants__ = ["normalize", "clip_per_dim", "clip_obs", "squash", "fused"]

    def __init__(
        self,
        actor: nn.Module,
        obs_dim: int,
        act_dim: int,
        squash: bool,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        clip_obs: float = 10.0,
        normalized: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        fused = FusedMLP.of(actor)
        self.fused = fused is not None
        self.actor = fused if fused is not None else actor
        self.normalize = mean is not None
        self.squash = bool(squash)
        self.clip_obs = float(clip_obs)
        if mean is None or std is None:
            mean, std = np.zeros(obs_dim), np.ones(obs_dim)
        if normalized is None:
            normalized = np.ones(obs_dim, dtype=bool)
        # Entries VecNormalize leaves alone (norm_obs_keys without them) pass through unclipped.
        self.clip_per_dim = not bool(np.all(normalized))
        scale = np.where(normalized, 1.0 / np.asarray(std, dtype=np.float64), 1.0)
        shift = np.where(normalized, -np.asarray(mean, dtype=np.float64) * scale, 0.0)
        low = np.where(normalized, -self.clip_obs, -np.inf)
        high = np.where(normalized, self.clip_obs, np.inf)
        f64 = torch.float64
        self.register_buffer("obs_scale", torch.as_tensor(scale, dtype=f64))
        self.register_buffer("obs_shift", torch.as_tensor(shift, dtype=f64))
        self.register_buffer("obs_clip_low", torch.as_tensor(low, dtype=f64))
        self.register_buffer("obs_clip_high", torch.as_tensor(high, dtype=f64))
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self._head(self._normalized(obs))

    def _normalized(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        if self.normalize:
            # float32 obs * float64 scale promotes to float64 inside the one op (exact upcast).
            x64 = torch.addcmul(self.obs_shift, x, self.obs_scale)
            if self.clip_per_dim:
                x64 = torch.clamp(x64, self.obs_clip_low, self.obs_clip_high)
            else:
                x64 = torch.clamp(x64, -self.clip_obs, self.clip_obs)
            x = x64.to(torch.float32)
        return x

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        a = self.actor(x)
        if self.squash:
            # gSDE with squash_output: the mode is tanh(mean); unscaling [-1, 1] to the action
            # space bounds [-1, 1] is the identity.
            return torch.tanh(a)
        # SB3's predict clips the Gaussian mean to the action space bounds.
        return torch.clamp(a, -1.0, 1.0)


class HistoryPolicy(FlatPolicy):
    """A policy on its last ``k`` observations (training's ``history: k``,
    :class:`manip_rl.policies.memory.HistoryStack`): the state is the ``k - 1`` older
    observations, newest first, zeros at an episode's start::

        forward(obs: [B, step_dim], history: [B, (k-1)*step_dim]) -> (action, history_out)

    Normalization and the MLP are :class:`FlatPolicy`'s, on the stacked ``k * step_dim`` input.
    """

    __constants__ = ["normalize", "clip_per_dim", "clip_obs", "squash", "fused", "history_dim"]

    def __init__(self, *args: Any, step_dim: int, k: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.step_dim, self.k = int(step_dim), int(k)
        self.history_dim = (self.k - 1) * self.step_dim

    def forward(
        self, obs: torch.Tensor, history: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat((obs.to(history.dtype), history), dim=1)
        return self._head(self._normalized(x)), x[:, : self.history_dim]


class RecurrentPolicy(FlatPolicy):
    """An LSTM policy (sb3-contrib RecurrentPPO's actor): normalizer, LSTM, MLP, head. The state
    is the LSTM's hidden and cell state, batch first, zeros at an episode's start::

        forward(obs: [B, obs_dim], h: [B, layers, hidden], c: [B, layers, hidden])
            -> (action, h_out, c_out)
    """

    def __init__(self, lstm: nn.LSTM, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lstm = lstm
        self.hidden_size, self.num_layers = int(lstm.hidden_size), int(lstm.num_layers)

    def forward(
        self, obs: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self._normalized(obs)
        # One time step of the sequence; nn.LSTM takes the state layers-first.
        out, (h1, c1) = self.lstm(
            x.unsqueeze(0), (h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous())
        )
        return self._head(out[0]), h1.transpose(0, 1), c1.transpose(0, 1)
