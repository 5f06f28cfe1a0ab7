"""The files of an ADR run (``RUN/adr/``): its settings, its newest ranges, its ranges' history
and the per-checkpoint states. Shared by training (``manip_rl.policies.train``), the callback,
the plot and the boundary audit, so none of them imports another for a file name."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from manip_rl.envs import registry
from manip_rl.fileio import atomic_write_text
from manip_rl.transfer.adr import AdrSettings, load_settings

ADR_DIR = "adr"
SETTINGS_FILE = "settings.json"
RANGES_FILE = "ranges.json"
EVENTS_FILE = "ranges.csv"
EVENT_COLUMNS = ("timesteps", "boundary", "success", "episodes", "action", "low", "high")


def task_of_config(cfg: Mapping) -> str:
    return registry.get(cfg["env_id"]).key


def init_run(path: str, cfg: Mapping, spec: str | os.PathLike | Mapping) -> AdrSettings:
    """Mark the run directory ``path`` as an ADR run: writes ``RUN/adr/settings.json``."""
    settings = load_settings(spec, task_of_config(cfg))
    atomic_write_text(
        os.path.join(path, ADR_DIR, SETTINGS_FILE), json.dumps(settings.to_dict(), indent=1)
    )
    return settings


def read_ranges(run_path: str) -> dict[str, list[float]] | None:
    """The newest saved ADR ranges of a run (None: not an ADR run, or none saved yet)."""
    p = os.path.join(run_path, ADR_DIR, RANGES_FILE)
    if not os.path.isfile(p):
        return None
    with open(p) as f:
        return json.load(f)["ranges"]


def state_file(timesteps: int) -> str:
    """The name of the ADR state saved with the checkpoint at ``timesteps``."""
    return f"state_{int(timesteps)}.json"
