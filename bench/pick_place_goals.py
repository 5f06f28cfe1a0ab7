"""Where a PandaPickPlace policy succeeds: success and grasp rate split by goal height (on the
table, or in the air), under the default randomization, seeded episodes never used in training.

    python bench/pick_place_goals.py                                  # the shipped policy, 200 ep
    python bench/pick_place_goals.py --policy policy.pt --episodes 100

No peer: it splits one policy's success, it does not time anything.
"""

from __future__ import annotations

import argparse
import sys

import gymnasium as gym
import numpy as np

import manip_rl  # noqa: F401  (registers the envs)
from manip_rl import policy_io
from manip_rl.envs.pick_place import PandaPickPlaceEnv
from manip_rl.export import load_policy
from manip_rl.ros_bridge.dds import PRETRAINED_DIR

AIR = 0.03  # m: a goal higher than this above the table is "in the air" (the cube's centre: 2.5 cm)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", default=str(PRETRAINED_DIR / "panda_pick_place.pt"))
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--seed", type=int, default=3_000_000, help="seed of the first episode")
    args = p.parse_args(argv)
    policy = load_policy(args.policy)
    if policy.task != PandaPickPlaceEnv.task:
        raise SystemExit(f"{args.policy} is a {policy.task} policy; this needs a pick_place one")
    env = gym.make(policy.env_id, action_mode=policy.action_spec.mode, randomization="default")
    rows = []
    for ep in range(args.episodes):
        obs, _ = env.reset(seed=args.seed + ep)
        truncated, grasped = False, 0.0
        while not truncated:
            obs, _, _, truncated, info = env.step(policy.act(policy_io.flatten_observation(obs)))
            grasped = max(grasped, float(info["is_grasped"]))
        rows.append((obs["desired_goal"][2] > AIR, info["is_success"], grasped))
    r = np.asarray(rows, dtype=float)
    print(f"{args.policy}: {args.episodes} randomized episodes from seed {args.seed}")
    for name, m in (("table", r[:, 0] == 0), ("air", r[:, 0] == 1), ("all", r[:, 0] >= 0)):
        print(f"{name:>5}: {int(m.sum()):4d} episodes, success {r[m, 1].mean():6.1%}, "
              f"grasped at some step {r[m, 2].mean():6.1%}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
