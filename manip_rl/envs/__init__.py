"""Domain-randomized Franka Panda manipulation tasks, registered with Gymnasium as ``manip_rl/...``."""

from __future__ import annotations

# Registered id -> (entry point, reward type, episode length in control steps).
TASK_IDS = {
    "PandaReach": ("manip_rl.envs.reach:PandaReachEnv", 50),
    "PandaPush": ("manip_rl.envs.push:PandaPushEnv", 100),
    "PandaPickPlace": ("manip_rl.envs.pick_place:PandaPickPlaceEnv", 100),
}


def env_ids() -> list[str]:
    """Every registered id: sparse and dense variant of each task."""
    return [f"manip_rl/{name}{suffix}-v0" for name in TASK_IDS for suffix in ("", "Dense")]


def register_envs() -> None:
    import gymnasium as gym

    for name, (entry_point, steps) in TASK_IDS.items():
        for suffix, reward_type in (("", "sparse"), ("Dense", "dense")):
            env_id = f"manip_rl/{name}{suffix}-v0"
            if env_id in gym.registry:
                continue
            gym.register(
                id=env_id,
                entry_point=entry_point,
                max_episode_steps=steps,
                kwargs={"reward_type": reward_type},
            )
