"""The env's Python overhead counted in instructions, not seconds: repeatable whatever else the
machine is doing (valgrind's callgrind counts the same total twice for the same binary and inputs).

Two runs of the same script under callgrind step ``manip_rl/PandaPush-v0`` (randomization off,
random actions, auto-reset) for ``--short`` and ``--long`` steps; their difference is the cost of
``long - short`` env steps with the start-up (imports, model compilation) cancelled out. The
share of it spent inside ``mj_step`` (inclusive) is the instruction-count counterpart of
``bench/env_throughput.py``'s "env / raw physics bound" ratio: 1.0 would be no overhead at all.

    python bench/env_instructions.py                     # this code, this venv's MuJoCo
    python bench/env_instructions.py --python bench/.peer-venv/bin/python --code /path/to/old

Needs valgrind (Debian's `valgrind`); takes a few minutes (callgrind runs ~50x slower).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV_ID = "manip_rl/PandaPush-v0"


def child(steps: int) -> None:
    import gymnasium as gym
    import numpy as np

    import manip_rl  # noqa: F401

    env = gym.make(ENV_ID, randomization=None)
    actions = np.random.default_rng(0).uniform(-1, 1, (4096, *env.action_space.shape))
    actions = actions.astype(np.float32)
    env.reset(seed=0)
    for i in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[i % len(actions)])
        if terminated or truncated:
            env.reset()
    env.close()


def counted(python: str, code: Path, steps: int, tmp: Path) -> tuple[int, int]:
    """(all instructions, instructions inside mj_step) of one child run."""
    out = tmp / f"cg.{steps}.%p"
    env = dict(os.environ, PYTHONPATH=str(code))
    # --trace-children: a venv's python may re-exec itself; the largest output is the run's.
    cmd = ["valgrind", "--tool=callgrind", "--trace-children=yes", f"--callgrind-out-file={out}",
           python, str(Path(__file__).resolve()), "--child", str(steps)]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    files = sorted(tmp.glob(f"cg.{steps}.*"), key=lambda p: p.stat().st_size)
    report = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", str(files[-1])],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    total = int(re.search(r"^\s*([\d,]+) .*PROGRAM TOTALS", report, re.M)[1].replace(",", ""))
    step = re.search(r"^\s*([\d,]+) .*:mj_step \[", report, re.M)
    return total, int(step[1].replace(",", "")) if step else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--python", default=sys.executable, help="interpreter (its venv's MuJoCo)")
    p.add_argument("--code", type=Path, default=ROOT, help="manip_rl checkout to import")
    p.add_argument("--short", type=int, default=100)
    p.add_argument("--long", type=int, default=400)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        child(args.child)
        return
    if shutil.which("valgrind") is None:
        sys.exit("env_instructions: valgrind not found; install Debian's valgrind")
    with tempfile.TemporaryDirectory() as d:
        t0, s0 = counted(args.python, args.code, args.short, Path(d))
        t1, s1 = counted(args.python, args.code, args.long, Path(d))
    n = args.long - args.short
    per_step, in_physics = (t1 - t0) / n, (s1 - s0) / n
    version = subprocess.run([args.python, "-c", "import mujoco; print(mujoco.__version__)"],
                             capture_output=True, text=True).stdout.strip()  # fmt: skip
    print(f"{ENV_ID}, randomization off, mujoco {version}, code {args.code}")
    print(f"  instructions per env step      {per_step:12,.0f}")
    print(f"  of which inside mj_step        {in_physics:12,.0f}")
    print(f"  physics share (1.0 = no overhead)   {in_physics / per_step:.3f}   (target >= 0.85)")


if __name__ == "__main__":
    main()
