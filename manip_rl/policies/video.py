"""``manip-rl video RUN``: an MP4 or GIF of a run's policy acting in its task."""

from __future__ import annotations

import argparse

import numpy as np

from manip_rl.episodes import run_episodes
from manip_rl.media import write_video
from manip_rl.policies.config import env_factory


def record(
    run, which: str, episodes: int, randomized: bool, seed: int, size: int
) -> tuple[list, list]:
    """Frames of ``episodes`` deterministic episodes, and each episode's success."""
    model = run.load_model(which)
    vecnorm = run.load_vecnormalize(which)
    factory = env_factory(run.config, randomized=randomized, monitor=False, render_mode="rgb_array")
    env = factory()
    base = env.unwrapped
    base._width = base._height = size  # the renderer is made on first use, at this size
    frames: list = []
    memory: dict = {"state": None}  # a recurrent policy's state over the episode

    def act(obs: list) -> np.ndarray:
        o = obs[0]
        x = o[None] if not isinstance(o, dict) else {k: v[None] for k, v in o.items()}
        if vecnorm is not None:
            x = vecnorm.normalize_obs(x)
        action, memory["state"] = model.predict(x, state=memory["state"], deterministic=True)
        return np.asarray(action)

    def frame(_episode: int, e) -> None:
        frames.append(e.render())

    def start(episode: int, e) -> None:
        memory["state"] = None
        frame(episode, e)

    try:
        run_ = run_episodes([env], act, episodes, seed, on_step=frame, on_reset=start)
    finally:
        env.close()
    successes = [e.success for e in run_]
    return frames, successes


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="a run directory made by `manip-rl train`")
    p.add_argument("--out", default=None, help="output .mp4 or .gif (default RUN/video.mp4)")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--model", choices=("auto", "best", "final", "latest"), default="auto")
    p.add_argument("--nominal", action="store_true", help="nominal model instead of randomized")
    p.add_argument("--seed", type=int, default=2_000_000)
    p.add_argument("--size", type=int, default=480, help="frame width and height in pixels")


def run(args: argparse.Namespace) -> int:
    import os

    from manip_rl.policies.rundir import RunError, load_run

    if args.episodes < 1:
        raise SystemExit("--episodes must be at least 1")
    try:
        r = load_run(args.run)
        which = r.default_which() if args.model == "auto" else args.model
    except RunError as e:
        raise SystemExit(f"manip-rl video: {e}") from None
    out = args.out or os.path.join(args.run, "video.mp4")
    frames, successes = record(r, which, args.episodes, not args.nominal, args.seed, args.size)
    fps = int(round(1.0 / 0.04))
    write_video(out, frames, fps=fps)
    print(f"{out}: {len(frames)} frames, {sum(successes)}/{len(successes)} episodes succeeded")
    return 0
