"""``manip-rl demo``: the main job on embedded defaults.

Until training, export and the ROS 2 bridge land, the main job is a domain-randomized rollout of
the scripted controller on PandaPush: it prints the success rate and writes a video.
"""

from __future__ import annotations

import argparse

from manip_rl.envs import rollout


def add_arguments(p: argparse.ArgumentParser) -> None:
    rollout.add_arguments(p)
    p.set_defaults(video="demo.mp4", episodes=10)


def run(args: argparse.Namespace) -> int:
    return rollout.run(args)
