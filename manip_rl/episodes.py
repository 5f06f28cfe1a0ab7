"""The one episode loop: whole episodes of an actor over a batch of environments.

Evaluation (``manip-rl eval``), the robustness sweeps and boundary audits
(``manip-rl robustness``), the rollout command and export's closed-loop check all run episodes
through :func:`run_episodes`, so they seed, step and count success the same way:

- episodes run in batches of ``len(envs)`` (the last batch may be smaller: it uses the first
  envs); episode ``k`` is reset with ``seed + k``, so two runs with the same seed face the same
  goals, starts and sampled physics;
- each step, ``act`` gets the observations of the whole batch (an env whose episode is over keeps
  its last observation in the list, so the batch keeps its shape) and returns one action per env;
  only the envs still running are stepped;
- an episode ends at ``terminated or truncated``; its success is its last ``info["is_success"]``
  (above 0.5).

No Gymnasium, SB3 or torch here: envs are anything with Gymnasium's ``reset``/``step``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# act(observations of the batch) -> actions, one row per env of the batch
Act = Callable[[list[Any]], Any]


@dataclasses.dataclass
class Episode:
    """One finished episode."""

    index: int
    """Its position among the episodes of the run (0-based)."""
    seed: int
    """The seed its env was reset with (``seed + index``)."""
    success: bool
    """``info["is_success"] > 0.5`` at its last step."""
    total_reward: float
    """The sum of its rewards."""
    length: int
    """Its number of steps."""
    info: dict
    """The ``info`` of its last step."""
    end: Any = None
    """What ``at_end(env)`` returned once the episode was over (None without ``at_end``)."""


def run_episodes(
    envs: Sequence[Any],
    act: Act,
    episodes: int,
    seed: int,
    *,
    on_step: Callable[[int, Any], None] | None = None,
    on_reset: Callable[[int, Any], None] | None = None,
    at_end: Callable[[Any], Any] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> list[Episode]:
    """Run ``episodes`` whole episodes of ``act`` over ``envs`` (see the module docstring).

    Args:
        envs: the environments stepped together (at least one).
        act: batched actor: the list of the batch's observations -> an array of actions.
        episodes: how many episodes in all.
        seed: episode ``k`` is reset with ``seed + k``.
        on_step: called as ``on_step(episode_index, env)`` after each step of a running episode
            (e.g. to render a video frame).
        on_reset: called as ``on_reset(episode_index, env)`` right after each reset (e.g. to
            render the episode's first frame).
        at_end: called as ``at_end(env)`` once the batch is over, before any env is reset again;
            its value goes into :attr:`Episode.end` (e.g. the final distance to the goal).
        on_batch: called with the number of episodes of each finished batch (a progress bar).

    Returns:
        the episodes in order of their index.
    """
    if not envs:
        raise ValueError("run_episodes: envs is empty; give at least one environment")
    out: list[Episode] = []
    for start in range(0, episodes, len(envs)):
        batch = envs[: min(len(envs), episodes - start)]
        obs = [e.reset(seed=seed + start + i)[0] for i, e in enumerate(batch)]
        if on_reset is not None:
            for i, e in enumerate(batch):
                on_reset(start + i, e)
        ret = np.zeros(len(batch))
        steps = [0] * len(batch)
        alive = [True] * len(batch)
        infos: list[dict] = [{} for _ in batch]
        while any(alive):
            actions = act(obs)
            for i, e in enumerate(batch):
                if not alive[i]:
                    continue
                obs[i], r, term, trunc, infos[i] = e.step(actions[i])
                ret[i] += r
                steps[i] += 1
                if on_step is not None:
                    on_step(start + i, e)
                if term or trunc:
                    alive[i] = False
        for i, e in enumerate(batch):
            out.append(
                Episode(
                    index=start + i,
                    seed=seed + start + i,
                    success=bool(infos[i].get("is_success", 0.0) > 0.5),
                    total_reward=float(ret[i]),
                    length=steps[i],
                    info=infos[i],
                    end=at_end(e) if at_end is not None else None,
                )
            )
        if on_batch is not None:
            on_batch(len(batch))
    return out
