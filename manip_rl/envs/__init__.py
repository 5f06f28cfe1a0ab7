"""Domain-randomized Franka Panda manipulation tasks, registered with Gymnasium as ``manip_rl/...``.

The tasks live in :mod:`manip_rl.envs.tasks`, one module each; :mod:`manip_rl.envs.registry`
finds them and is what the rest of manip_rl reads."""

from __future__ import annotations


def env_ids() -> list[str]:
    """Every registered id: sparse and dense variant of each task."""
    from manip_rl.envs import registry

    return registry.env_ids()


def register_envs() -> None:
    """Register every task's ids with Gymnasium (``import manip_rl`` does this)."""
    from manip_rl.envs import registry

    registry.register_envs()
