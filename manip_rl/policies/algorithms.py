"""The ``--algo`` table: name -> SB3 algorithm class. All are on-policy (``OnPolicyAlgorithm``), so
they share rollout collection, VecNormalize, callbacks, checkpoints and evaluation."""

from __future__ import annotations

from typing import Any

ALGORITHMS = ("ppo", "a2c", "trpo", "reinforce", "ppo_kl", "recurrent_ppo")
# The algorithms whose policy carries a recurrent state (an LSTM) between steps.
RECURRENT = ("recurrent_ppo",)
# The algorithms a privileged critic (manip_rl.policies.privileged) is built and tested for.
PRIVILEGED_CRITIC = ("ppo", "recurrent_ppo")


def policy_class(algo: str, policy: str, privileged_critic: bool = False) -> Any:
    """The SB3 policy (a class or SB3's name for one) a run of ``algo`` trains: ``policy``
    (MlpPolicy | MultiInputPolicy) as that algorithm spells it, or the privileged-critic class."""
    if privileged_critic:
        from manip_rl.policies import privileged

        return (
            privileged.PrivilegedLstmPolicy
            if algo in RECURRENT
            else (privileged.PrivilegedActorCriticPolicy)
        )
    if algo in RECURRENT:  # sb3-contrib's names for the LSTM variants
        return {"MlpPolicy": "MlpLstmPolicy", "MultiInputPolicy": "MultiInputLstmPolicy"}[policy]
    return policy


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
    if name == "recurrent_ppo":
        from sb3_contrib import RecurrentPPO

        return RecurrentPPO
    raise ValueError(f"algo {name!r} is unknown; use one of {ALGORITHMS}")
