"""Boundary audits: ADR's test of a range (each end pinned, the rest drawn from the ranges)
for any ranges, an ADR run's or a hand-set configuration's, with what ADR's rule would do."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from manip_rl.envs.randomization import RandomizationConfig, RandomizationConfigError, load_config
from manip_rl.transfer import adr, adr_env, adr_run
from manip_rl.transfer.actors import Actor
from manip_rl.transfer.shifts import RobustnessError
from manip_rl.transfer.sweep import Point, Runner, one_task


@dataclasses.dataclass
class Boundaries:
    """What a boundary audit probes: ADR settings (quantities and thresholds), the ranges, and
    the base randomization that supplies everything ADR does not manage."""

    source: str
    settings: Any  # manip_rl.transfer.adr.AdrSettings
    ranges: dict[str, list[float]]
    base: RandomizationConfig | None


def load_boundaries(spec: str, task: str) -> Boundaries:
    """``--boundaries``: an ADR run directory (its newest saved ranges, its settings and its base
    randomization), or a randomization config, ``default`` or a YAML path (its hand-set ranges,
    judged with the default ADR thresholds)."""
    import json

    import yaml

    where = f"--boundaries {spec}"
    if os.path.isdir(spec):
        sp = os.path.join(spec, adr_run.ADR_DIR, adr_run.SETTINGS_FILE)
        if not os.path.isfile(sp):
            raise RobustnessError(
                f"{where}: not an ADR run (no {adr_run.ADR_DIR}/{adr_run.SETTINGS_FILE}); give an ADR "
                f"run directory, 'default', or a randomization YAML"
            )
        ranges = adr_run.read_ranges(spec)
        if ranges is None:
            raise RobustnessError(
                f"{where}: the ADR run has saved no ranges yet ({adr_run.ADR_DIR}/"
                f"{adr_run.RANGES_FILE} is written with its first checkpoint)"
            )
        with open(os.path.join(spec, "config.yaml")) as f:
            cfg = yaml.safe_load(f)
        run_task = adr_run.task_of_config(cfg)
        if run_task != task:
            raise RobustnessError(f"{where}: an ADR run of {run_task}, the policies are {task}")
        with open(sp) as f:
            settings = adr.AdrSettings.from_dict(json.load(f), task, source=sp)
        base = load_config(cfg.get("randomization"), task)
        return Boundaries(spec, settings, ranges, base)
    try:
        base = load_config(spec, task)
    except (RandomizationConfigError, OSError) as e:
        raise RobustnessError(f"{where}: {e}") from None
    if base is None:
        raise RobustnessError(f"{where}: randomizes nothing, so there are no boundaries to probe")
    # A hand-set file applies its sensor noise at a fixed x1, not over a range: left to the base.
    settings = adr.load_settings({"params": {"observation_noise": None}}, task)
    ranges = adr.ranges_of_config(base)
    del ranges["observation_noise"]
    return Boundaries(spec, settings, ranges, base)


def boundary_audit(
    actors: Sequence[Actor],
    boundaries: Boundaries,
    episodes: int = 50,
    seed: int = 2_000_000,
    n_envs: int = 8,
    progress: bool = True,
) -> list[Point]:
    """ADR's test of a range, for any ranges: each policy runs ``episodes`` episodes with one
    quantity pinned at one end of its range and every other quantity drawn from its range, as an
    ADR boundary episode does. Ends at the nominal value are skipped. Every policy faces the same
    episodes (seeds and drawn configurations). Points have ``kind="boundary"`` and
    ``quantity="<name>:low|high"``."""
    from tqdm import tqdm

    task = one_task(actors, episodes)
    state = adr.AdrState(boundaries.settings, boundaries.ranges)
    probes = [
        b for b in state.boundaries
        if abs(state.value(b) - boundaries.settings.param(b.split(":")[0]).nominal) > 1e-9
    ]  # fmt: skip
    if not probes:
        raise RobustnessError(
            f"--boundaries {boundaries.source}: every range is the nominal point; nothing to probe"
        )
    noise_ref = adr_env.default_noise(task)
    bar = tqdm(total=len(actors) * len(probes) * episodes, unit="ep", desc="boundaries",
               disable=not progress)  # fmt: skip
    out: list[Point] = []
    try:
        for actor in actors:
            runner = Runner(actor, n_envs=min(n_envs, episodes))
            batch = len(runner.envs)
            bar.set_postfix_str(actor.label)
            try:
                for i, b in enumerate(probes):
                    rng = np.random.default_rng([seed, i])  # the same draws for every policy
                    wins = 0
                    for start in range(0, episodes, batch):
                        cfg = state.episode_config(rng, boundaries.base, noise_ref, b)
                        n = min(batch, episodes - start)
                        wins += runner.successes(cfg, n, seed + start, bar.update)
                    out.append(Point(actor.label, "boundary", b, state.value(b), wins, episodes))
            finally:
                runner.close()
    finally:
        bar.close()
    return out


def verdict(success: float, settings: Any) -> str:
    """What ADR's rule would do with a boundary at this success rate."""
    if success >= settings.success_high:
        return "widen"
    if success <= settings.success_low:
        return "narrow"
    return "keep"
