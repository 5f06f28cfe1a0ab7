"""``manip-rl envs``: the registered environments, their spaces and control period."""

from __future__ import annotations

import argparse

import gymnasium as gym

from manip_rl.envs import env_ids


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", action="store_true", help="also print each observation layout")


def run(args: argparse.Namespace) -> int:
    for env_id in env_ids():
        env = gym.make(env_id)
        base = env.unwrapped
        print(
            f"{env_id:34s} obs {base.layout.flat_dim:3d} (flat)  action {base.action_spec.dim}  "
            f"{env.spec.max_episode_steps} steps x {base.control_period * 1000:.0f} ms  "
            f"reward {base.reward_type}"
        )
        if args.layout:
            for f in base.layout.flat_fields():
                print(
                    f"    [{f['start']:2d}:{f['start'] + f['size']:2d}] {f['key']}.{f['name']} ({f['unit']})"
                )
        env.close()
    return 0
