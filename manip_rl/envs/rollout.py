"""``manip-rl rollout``: run a scripted (or random) controller on a randomized task, print the
success rate and write a video."""

from __future__ import annotations

import argparse

import gymnasium as gym
from tqdm import tqdm

from manip_rl.envs import env_ids
from manip_rl.envs.registry import scripted_controller as scripted_policy
from manip_rl.episodes import run_episodes
from manip_rl.media import write_video
from manip_rl.stats import wilson_interval


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--env", default="manip_rl/PandaPush-v0", choices=env_ids(), help="environment id"
    )
    p.add_argument("--episodes", type=int, default=10, help="number of episodes")
    p.add_argument("--controller", choices=("scripted", "random"), default="scripted")
    p.add_argument(
        "--randomization",
        default="default",
        help="'default' (the task's shipped ranges), 'none', or a YAML path",
    )
    p.add_argument("--action-mode", choices=("joint_delta", "ee_delta"), default="joint_delta")
    p.add_argument(
        "--video",
        default="rollout.mp4",
        help="video of the first episodes (.mp4 or .gif); '' for none",
    )
    p.add_argument("--video-episodes", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    if args.episodes < 1:
        raise SystemExit("--episodes must be at least 1")
    want_video = bool(args.video) and args.video_episodes > 0
    env = gym.make(
        args.env,
        randomization=args.randomization,
        action_mode=args.action_mode,
        render_mode="rgb_array" if want_video else None,
    )
    policy = scripted_policy(env) if args.controller == "scripted" else None
    frames: list = []

    def act(obs: list) -> list:
        return [policy(obs[0]) if policy else env.action_space.sample()]

    def on_step(episode: int, e: gym.Env) -> None:
        if want_video and episode < args.video_episodes:
            frames.append(e.render())

    with tqdm(total=args.episodes, desc=f"{args.controller} on {args.env}", unit="ep") as bar:
        episodes = run_episodes([env], act, args.episodes, args.seed, on_step=on_step,
                                on_batch=bar.update)  # fmt: skip
    successes = sum(int(e.success) for e in episodes)
    lo, hi = wilson_interval(successes, args.episodes)
    print(
        f"{args.env} ({args.controller}, randomization={args.randomization}): success "
        f"{successes}/{args.episodes} = {successes / args.episodes:.0%} (95% CI {lo:.0%}-{hi:.0%})"
    )
    if frames:
        path = write_video(args.video, frames, fps=env.metadata["render_fps"])
        print(f"video: {path} ({len(frames)} frames)")
    env.close()
    return 0


def main() -> None:  # pragma: no cover
    p = argparse.ArgumentParser()
    add_arguments(p)
    raise SystemExit(run(p.parse_args()))
