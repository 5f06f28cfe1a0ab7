"""Success rate of a policy with a 95% interval, under domain randomization and on the nominal
model; ``manip-rl eval RUN``."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from manip_rl.episodes import run_episodes
from manip_rl.policies.config import env_factory
from manip_rl.stats import wilson_interval


@dataclasses.dataclass
class EvalResult:
    successes: int
    episodes: int
    mean_return: float
    mean_final_distance: float

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.episodes)


class Evaluator:
    """Runs whole episodes of a policy in a batch of environments (one process; batched
    inference; :func:`manip_rl.episodes.run_episodes`). Episode ``i`` is seeded ``seed + i``, so two evaluations of different policies,
    or of one policy at different times, face the same goals and the same sampled physics."""

    def __init__(self, cfg: Mapping, randomized: bool, n_envs: int = 8, seed: int = 1_000_000):
        self.envs = [
            env_factory(cfg, randomized=randomized, monitor=False)() for _ in range(max(1, n_envs))
        ]
        self.seed = seed

    def close(self) -> None:
        for e in self.envs:
            e.close()

    def run(self, policy, vecnorm: Any, episodes: int, deterministic: bool = True) -> EvalResult:
        """``policy``: an SB3 model (uses ``predict``); ``vecnorm``: VecNormalize statistics or None."""

        # A recurrent policy's state, carried between the steps of a batch of episodes and
        # cleared when the next batch starts (a memoryless policy passes None through).
        memory: dict[str, Any] = {"state": None}

        def act(obs: list) -> Any:
            x = _stack(obs)
            if vecnorm is not None:
                x = vecnorm.normalize_obs(x)
            action, memory["state"] = policy.predict(
                x, state=memory["state"], deterministic=deterministic
            )
            return action

        def new_episode(index: int, env: Any) -> None:
            memory["state"] = None

        def final_distance(env: Any) -> float:
            base = env.unwrapped
            return float(np.linalg.norm(base._achieved_true() - base.goal))

        eps = run_episodes(
            self.envs, act, episodes, self.seed, at_end=final_distance, on_reset=new_episode
        )
        return EvalResult(
            sum(int(e.success) for e in eps),
            episodes,
            float(np.mean([e.total_reward for e in eps])),
            float(np.mean([e.end for e in eps])),
        )


def _stack(obs: list) -> Any:
    if isinstance(obs[0], dict):
        return {k: np.stack([o[k] for o in obs]) for k in obs[0]}
    return np.stack(obs)


def evaluate_run(run, which: str, episodes: int, seed: int = 1_000_000, n_envs: int = 8) -> dict:
    model = run.load_model(which)
    vecnorm = run.load_vecnormalize(which)
    out = {}
    for cond, randomized in (("randomized", True), ("nominal", False)):
        ev = Evaluator(run.config, randomized=randomized, n_envs=min(n_envs, episodes), seed=seed)
        try:
            out[cond] = ev.run(model, vecnorm, episodes)
        finally:
            ev.close()
    return out


def format_table(rows: list[tuple[str, str, dict]]) -> str:
    """Markdown table of (run, model, {condition: EvalResult})."""
    lines = [
        "| run | model | condition | success | 95% interval | episodes | mean return | final distance (m) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run_name, which, results in rows:
        for cond, r in results.items():
            lo, hi = r.interval
            lines.append(
                f"| {run_name} | {which} | {cond} | {r.success_rate:.1%} | {lo:.1%} – {hi:.1%} | "
                f"{r.episodes} | {r.mean_return:.2f} | {r.mean_final_distance:.3f} |"
            )
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "runs", nargs="+", metavar="RUN", help="run directories made by `manip-rl train`"
    )
    p.add_argument("--episodes", type=int, default=100, help="episodes per condition (default 100)")
    p.add_argument(
        "--model",
        choices=("auto", "best", "final", "latest"),
        default="auto",
        help="which saved model (auto: best, else final, else latest checkpoint)",
    )
    p.add_argument("--seed", type=int, default=1_000_000, help="seed of the first episode")
    p.add_argument("--n-envs", type=int, default=8, help="environments stepped together")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import os

    from manip_rl.policies.rundir import RunError, load_run

    if args.episodes < 1:
        raise SystemExit("--episodes must be at least 1")
    rows = []
    for path in args.runs:
        try:
            r = load_run(path)
            which = r.default_which() if args.model == "auto" else args.model
            results = evaluate_run(r, which, args.episodes, args.seed, args.n_envs)
        except RunError as e:
            raise SystemExit(f"manip-rl eval: {e}") from None
        rows.append((os.path.basename(os.path.normpath(path)), which, results))
    print(format_table(rows))
    return 0
