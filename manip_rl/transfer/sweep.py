"""Sweeps: a :class:`Runner` runs whole episodes of one actor under a configuration, and
:func:`sweep` runs every actor at every point of the swept quantities and every shift set."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from manip_rl.envs.randomization import RandomizationConfig
from manip_rl.episodes import run_episodes
from manip_rl.stats import wilson_interval
from manip_rl.transfer.actors import Actor, FileActor
from manip_rl.transfer.adr_env import set_env_randomization
from manip_rl.transfer.shifts import NOMINAL, RobustnessError, shift_config


@dataclasses.dataclass
class Point:
    policy: str
    kind: str  # "sweep" | "shift_set"
    quantity: str  # the swept quantity, or the shift set's name
    value: float | str
    successes: int
    episodes: int

    @property
    def success(self) -> float:
        return self.successes / self.episodes

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.episodes)

    def row(self) -> dict:
        lo, hi = self.interval
        return {
            "policy": self.policy, "kind": self.kind, "quantity": self.quantity,
            "value": self.value, "successes": self.successes, "episodes": self.episodes,
            "success": round(self.success, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4),
        }  # fmt: skip


class Runner:
    """A batch of environments for one actor; runs whole episodes under a configuration."""

    def __init__(self, actor: Actor, n_envs: int = 8) -> None:
        import gymnasium as gym

        import manip_rl  # noqa: F401

        self.actor = actor
        if isinstance(actor, FileActor) and actor.policy.format == "torchscript":
            import torch

            # A batch of 8 observations through a small MLP: one thread is fastest, and more
            # threads only contend with the physics on a busy machine.
            torch.set_num_threads(1)
        self.envs = [
            gym.make(actor.env_id, action_mode=actor.action_mode, **actor.env_kwargs)
            for _ in range(max(1, n_envs))
        ]
        self.act = actor.bind(self.envs)

    def close(self) -> None:
        for e in self.envs:
            e.close()

    def successes(
        self,
        config: RandomizationConfig | None,
        episodes: int,
        seed: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> int:
        for e in self.envs:
            set_env_randomization(e, config)
        eps = run_episodes(self.envs, self.act, episodes, seed, on_batch=on_batch)
        return sum(int(e.success) for e in eps)


def one_task(actors: Sequence[Actor], episodes: int) -> str:
    if episodes < 1:
        raise RobustnessError("--episodes must be at least 1")
    tasks = {a.task for a in actors}
    if len(tasks) != 1:
        raise RobustnessError(
            f"the policies are for different tasks ({', '.join(sorted(tasks))}); compare "
            f"policies of one task per plot"
        )
    return tasks.pop()


def sweep(
    actors: Sequence[Actor],
    quantities: Mapping[str, Sequence[float]],
    shift_sets: Mapping[str, RandomizationConfig],
    episodes: int = 50,
    seed: int = 2_000_000,
    n_envs: int = 8,
    progress: bool = True,
) -> list[Point]:
    """Every actor at every sweep point and shift set; the nominal point is included once per
    actor as ``kind="shift_set", quantity="nominal"``."""
    from tqdm import tqdm

    task = one_task(actors, episodes)
    points_per_actor = 1 + sum(len(v) for v in quantities.values()) + len(shift_sets)
    bar = tqdm(
        total=len(actors) * points_per_actor * episodes,
        unit="ep",
        desc="robustness",
        disable=not progress,
    )
    out: list[Point] = []
    try:
        for actor in actors:
            runner = Runner(actor, n_envs=min(n_envs, episodes))
            try:
                bar.set_postfix_str(actor.label)

                def point(kind: str, quantity: str, value: Any, cfg: Any, r: Runner = runner):
                    wins = r.successes(cfg, episodes, seed, bar.update)
                    return Point(r.actor.label, kind, quantity, value, wins, episodes)

                out.append(point("shift_set", NOMINAL, "", None))
                for name, values in quantities.items():
                    for v in values:
                        out.append(point("sweep", name, v, shift_config(task, {name: v})))
                for name, cfg in shift_sets.items():
                    out.append(point("shift_set", name, "", cfg))
            finally:
                runner.close()
    finally:
        bar.close()
    return out
