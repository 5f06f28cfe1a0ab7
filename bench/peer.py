"""The Fetch benchmark peers' own environment: a virtualenv in ``bench/.peer-venv`` with the MuJoCo
that gymnasium-robotics 1.4.2's Fetch envs need (they break on mujoco >= 3.12, which manip_rl
has moved past). FetchPush-v4 (bench/env_throughput.py) and SB3 PPO on FetchReachDense-v4
(bench/train_throughput.py) run there. Made on first use, reused afterwards; remade if the pins
change."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

import gymnasium as gym
import numpy as np

PEER_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".peer-venv")
# Gymnasium, NumPy, SB3 and torch as in the product's environment, so the env API's and the
# learner's overheads are the same (torch 2.13.0: the CPU wheel these machines hold).
PEER_PINS = (
    "mujoco==3.11.0",
    "gymnasium-robotics==1.4.2",
    f"gymnasium=={gym.__version__}",
    f"numpy=={np.__version__}",
    f"stable-baselines3=={importlib.metadata.version('stable-baselines3')}",
    f"torch=={importlib.metadata.version('torch').split('+')[0]}",
)
_STAMP = os.path.join(PEER_DIR, "manip_rl-peer-pins.txt")


def peer_python() -> str:
    """The peer environment's python, making the environment first if it is missing or stale."""
    python = os.path.join(PEER_DIR, "bin", "python")
    wanted = "\n".join(PEER_PINS) + "\n"
    if os.path.isfile(_STAMP) and os.path.exists(python):
        with open(_STAMP) as f:
            if f.read() == wanted:
                return python
    if os.path.exists(PEER_DIR):
        shutil.rmtree(PEER_DIR)
    print(f"peer: making {PEER_DIR} ({', '.join(PEER_PINS)})", file=sys.stderr, flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", PEER_DIR], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *PEER_PINS], check=True)
    except subprocess.CalledProcessError as e:
        raise SystemExit(
            f"peer: could not make {PEER_DIR} ({e}); it needs pip access to {', '.join(PEER_PINS)}"
        ) from e
    with open(_STAMP, "w") as f:  # written last: a half-made environment has no stamp
        f.write(wanted)
    return python


def peer_measure(script: str, *args: str) -> object:
    """Run ``script --peer ARGS`` with the peer's python; returns the JSON it prints last."""
    out = subprocess.run(
        [peer_python(), script, "--peer", *args], check=True, capture_output=True, text=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
