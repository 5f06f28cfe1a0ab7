"""``manip-rl envs``: the registered tasks and environments, their spaces and control period,
read from the task registry."""

from __future__ import annotations

import argparse

import gymnasium as gym

from manip_rl.envs import registry


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", action="store_true", help="also print each observation layout")


def run(args: argparse.Namespace) -> int:
    for spec in registry.tasks().values():
        scales = ", ".join(f"{k} {v:.3g}" for k, v in spec.reward_scales.items()) or "-"
        print(
            f"{spec.name} ({spec.key}; {spec.entry_point}): "
            f"{'cube' if spec.has_object else 'no object'}, "
            f"{'gripper' if spec.gripper else 'no gripper'}, default action "
            f"{spec.default_action_mode}, dense scales: {scales}\n"
            f"    randomization {spec.randomization_file}, training {spec.train_file}"
        )
        for env_id in spec.env_ids:
            env = gym.make(env_id)
            base = env.unwrapped
            print(
                f"  {env_id:34s} obs {base.layout.flat_dim:3d} (flat)  action "
                f"{base.action_spec.dim} ({base.action_spec.mode})  "
                f"{env.spec.max_episode_steps} steps x {base.control_period * 1000:.0f} ms  "
                f"reward {base.reward_type}"
            )
            if args.layout:
                for f in base.layout.flat_fields():
                    print(
                        f"      [{f['start']:2d}:{f['start'] + f['size']:2d}] "
                        f"{f['key']}.{f['name']} ({f['unit']})"
                    )
            env.close()
    return 0
