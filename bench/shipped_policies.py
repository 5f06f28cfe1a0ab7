"""Success of the shipped policy files on this code and this MuJoCo, against the figures the
README records for them (taken with `manip-rl eval RUN` on the training run, on mujoco 3.11).

Each file is loaded with ``load_policy`` and run in the env it describes (``make_env``), under the
default randomization and on the nominal env, through the one episode loop
(``manip_rl.episodes.run_episodes``), deterministic, batch of 8. A figure "holds" when the
recorded rate lies inside the new 95% interval.

    python bench/shipped_policies.py                    # 200 episodes each (PickPlace 1000)
    python bench/shipped_policies.py --episodes 50      # quicker, wider intervals
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import manip_rl
from manip_rl import policy_io
from manip_rl.episodes import run_episodes
from manip_rl.export import load_policy
from manip_rl.stats import wilson_interval

PRETRAINED = Path(manip_rl.__file__).parent / "policies" / "pretrained"

# file -> (episodes, first seed, recorded randomized rate, recorded nominal rate); README table.
RECORDED = {
    "panda_reach.pt": (200, 1_000_000, 0.995, 1.000),
    "panda_push.pt": (200, 1_000_000, 0.810, 0.960),
    "panda_pick_place.pt": (1000, 20_000, 0.626, 0.911),
}


def success(path: Path, randomization: object, episodes: int, seed: int, n_envs: int) -> int:
    policy = load_policy(path)
    envs = [policy.make_env(randomization=randomization) for _ in range(min(n_envs, episodes))]

    def act(obs: list) -> np.ndarray:
        return policy.act(np.stack([policy_io.flatten_observation(o) for o in obs]))

    with tqdm(total=episodes, desc=f"{path.name} {randomization or 'nominal'}", leave=False) as bar:
        eps = run_episodes(envs, act, episodes, seed, on_batch=bar.update)
    for e in envs:
        e.close()
    return sum(e.success for e in eps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--episodes", type=int, default=None, help="per condition (default: README's)")
    p.add_argument("--n-envs", type=int, default=8)
    p.add_argument("--only", default=None, help="one file name, e.g. panda_push.pt")
    args = p.parse_args()
    import mujoco

    print(f"mujoco {mujoco.__version__}")
    print(
        f"{'file':22s}{'condition':12s}{'episodes':>9s}{'success':>9s}  95% CI         recorded  holds"
    )
    for name, (n, seed, rec_rand, rec_nom) in RECORDED.items():
        if args.only and name != args.only:
            continue
        n = args.episodes or n
        for cond, randomization, recorded in (
            ("randomized", "default", rec_rand),
            ("nominal", None, rec_nom),
        ):
            t0 = time.perf_counter()
            k = success(PRETRAINED / name, randomization, n, seed, args.n_envs)
            lo, hi = wilson_interval(k, n)
            holds = "yes" if lo <= recorded <= hi else "NO"
            print(
                f"{name:22s}{cond:12s}{n:9d}{k / n:9.1%}  {lo:5.1%}-{hi:6.1%}  {recorded:8.1%}  "
                f"{holds}   ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
