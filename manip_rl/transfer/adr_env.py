"""The environment side of ADR: :class:`AdrWrapper` draws each episode's randomization from
the ADR ranges in the environment process; :class:`AdrEnvFactory` is the picklable factory that
wraps an env factory with it; :func:`set_env_randomization` swaps an env's randomization
without rebuilding it (also used by the robustness sweeps)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from manip_rl.envs.randomization import DomainRandomizer, RandomizationConfig, load_config
from manip_rl.transfer.adr import AdrSettings, AdrState


def set_env_randomization(env: Any, config: RandomizationConfig | None) -> None:
    """Make ``env`` sample ``config`` from its next reset on, without rebuilding it. The
    randomizer keeps the nominal model it copied when first made, so configs never compound."""
    base = env.unwrapped
    base.randomization_config = config
    if config is None:
        if base._randomizer is not None:
            base._randomizer.restore()
            base._randomizer = None
        return
    if base._randomizer is None:
        base._randomizer = DomainRandomizer(base.model, base.ids, config)
    else:
        base._randomizer.config = config


def default_noise(task: str) -> dict[str, float]:
    """The task's default per-step sensor noise stds (the unit of ``observation_noise``)."""
    cfg = load_config("default", task)
    return dict(cfg.observation_noise) if cfg is not None else {}


try:
    import gymnasium as gym

    _Wrapper = gym.Wrapper
except ImportError:  # pragma: no cover - gymnasium is a core dependency
    _Wrapper = object


class AdrWrapper(_Wrapper):
    """Draws each episode's randomization from the ADR ranges; ``info["adr_boundary"]`` is
    ``(boundary, value)`` when the episode evaluates a boundary, else None."""

    def __init__(
        self,
        env: Any,
        settings: AdrSettings,
        ranges: Mapping[str, list[float]] | None = None,
        base: RandomizationConfig | None = None,
        seed: int | None = None,
        last_success: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(env)
        self.adr = AdrState(settings, ranges, last_success=last_success)
        self.base = base
        self.noise_ref = default_noise(env.unwrapped.task)
        self.adr_rng = np.random.default_rng(seed)
        self._boundary: tuple[str, float] | None = None

    def adr_set_ranges(
        self, ranges: Mapping[str, list[float]], last_success: Mapping[str, float] | None = None
    ) -> None:
        """New ranges (and, for ``boundary_focus``, the boundaries' last successes) from the
        training process; they apply from the next reset."""
        self.adr = AdrState(self.adr.settings, ranges, last_success=last_success)

    def adr_ranges(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.adr.ranges.items()}

    def reset(self, **kwargs: Any):
        cfg, boundary, value = self.adr.sample_episode(self.adr_rng, self.base, self.noise_ref)
        set_env_randomization(self.env, cfg)
        self._boundary = (boundary, value) if boundary else None
        obs, info = self.env.reset(**kwargs)
        info["adr_boundary"] = self._boundary
        return obs, info

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["adr_boundary"] = self._boundary
        return obs, reward, terminated, truncated, info


class AdrEnvFactory:
    """Picklable: wraps an env factory (SubprocVecEnv sends it to each worker)."""

    def __init__(
        self,
        inner: Callable[[], Any],
        settings: dict,
        task: str,
        ranges: dict,
        base: dict | None,
        seed: int | None,
        last_success: dict | None = None,
    ) -> None:
        self.inner, self.settings, self.task = inner, settings, task
        self.ranges, self.base, self.seed = ranges, base, seed
        self.last_success = last_success

    def __call__(self) -> AdrWrapper:
        base = RandomizationConfig.from_dict(self.base) if self.base else None
        settings = AdrSettings.from_dict(self.settings, self.task)
        return AdrWrapper(
            self.inner(), settings, self.ranges, base, self.seed, last_success=self.last_success
        )
