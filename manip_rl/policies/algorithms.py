"""The ``--algo`` table: name -> SB3 algorithm class. All are on-policy (``OnPolicyAlgorithm``), so
they share rollout collection, VecNormalize, callbacks, checkpoints and evaluation."""

from __future__ import annotations

ALGORITHMS = ("ppo", "a2c", "trpo", "reinforce", "ppo_kl")


def algorithm_class(name: str):
    """The SB3 class of ``name`` (imported on use)."""
    if name == "ppo":
        from stable_baselines3 import PPO

        return PPO
    if name == "a2c":
        from stable_baselines3 import A2C

        return A2C
    if name == "trpo":
        from sb3_contrib import TRPO

        return TRPO
    if name == "reinforce":
        from manip_rl.policies.reinforce import REINFORCE

        return REINFORCE
    if name == "ppo_kl":
        from manip_rl.policies.ppo_kl import PPOKL

        return PPOKL
    raise ValueError(f"algo {name!r} is unknown; use one of {ALGORITHMS}")
