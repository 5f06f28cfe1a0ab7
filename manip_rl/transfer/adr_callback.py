"""The training side of ADR: :class:`AdrCallback`, an SB3 callback (see
:mod:`manip_rl.transfer.adr`). ``manip_rl.policies.train`` imports it; it imports nothing from
the training code."""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from manip_rl.fileio import atomic_write_text
from manip_rl.transfer.adr import AdrConfigError, AdrSettings, AdrState
from manip_rl.transfer.adr_env import AdrEnvFactory
from manip_rl.transfer.adr_run import (
    ADR_DIR,
    EVENT_COLUMNS,
    EVENTS_FILE,
    RANGES_FILE,
    SETTINGS_FILE,
    state_file,
    task_of_config,
)

try:
    from stable_baselines3.common.callbacks import BaseCallback as _BaseCallback
except ImportError:  # pragma: no cover - training needs SB3 anyway
    _BaseCallback = object


class AdrCallback(_BaseCallback):
    """The training side of ADR (see :mod:`manip_rl.transfer.adr`). ``train.py`` makes one with
    :meth:`for_run`, wraps the env factories with :meth:`wrap_factory`, and calls
    :meth:`save_state` before every checkpoint."""

    def __init__(
        self, run_path: str, settings: AdrSettings, task: str, base: dict | None,
        state: AdrState, events: list[dict], start_steps: int = 0,
    ) -> None:  # fmt: skip
        super().__init__()
        self.run_path, self.settings, self.task, self.base = run_path, settings, task, base
        self.state, self.events, self.start_steps = state, events, start_steps
        self.boundary_episodes = 0

    @classmethod
    def for_run(cls, path: str, cfg: Mapping, resume_from: Mapping | None) -> AdrCallback | None:
        """None unless ``path`` is an ADR run (``RUN/adr/settings.json``). Resuming restores the
        ranges and buffers saved with the checkpoint ``resume_from`` names."""
        sp = os.path.join(path, ADR_DIR, SETTINGS_FILE)
        if not os.path.isfile(sp):
            return None
        task = task_of_config(cfg)
        with open(sp) as f:
            settings = AdrSettings.from_dict(json.load(f), task, source=sp)
        base = cfg.get("randomization")
        events_path = os.path.join(path, ADR_DIR, EVENTS_FILE)
        if resume_from is None:
            state = AdrState(settings)
            cb = cls(path, settings, task, base, state, [], 0)
            for p in settings.params:
                lo, hi = state.ranges[p.name]
                cb.events.append(
                    {"timesteps": 0, "boundary": p.name, "success": "", "episodes": 0,
                     "action": "start", "low": lo, "high": hi}
                )  # fmt: skip
            cb._write_events()
            return cb
        steps = int(resume_from["timesteps"])
        state_path = os.path.join(path, ADR_DIR, state_file(steps))
        if not os.path.isfile(state_path):
            raise AdrConfigError(
                f"{path}: the checkpoint at {steps} steps has no ADR state "
                f"({os.path.relpath(state_path, path)} missing); the run cannot resume its ranges"
            )
        with open(state_path) as f:
            saved = json.load(f)
        state = AdrState(settings, saved["ranges"], saved.get("buffers"), saved.get("last_success"))
        events = []
        if os.path.isfile(events_path):
            with open(events_path, newline="") as f:
                events = [r for r in csv.DictReader(f) if int(float(r["timesteps"])) <= steps]
        cb = cls(path, settings, task, base, state, events, steps)
        cb._write_events()  # drop the rows the kill threw away, as train.py does for its logs
        return cb

    def wrap_factory(self, factory: Callable[[], Any]) -> AdrEnvFactory:
        return AdrEnvFactory(
            factory,
            self.settings.to_dict(),
            self.task,
            copy.deepcopy(self.state.ranges),
            self.base,
            getattr(factory, "seed", None),
            # A resumed run's workers start with the saved weights of boundary_focus too.
            dict(self.state.last_success),
        )

    def _on_step(self) -> bool:
        infos, dones = self.locals.get("infos", ()), self.locals.get("dones", ())
        updates = []
        for info, done in zip(infos, dones, strict=True):
            if not done or not info.get("adr_boundary"):
                continue
            boundary, value = info["adr_boundary"]
            self.boundary_episodes += 1
            u = self.state.record(boundary, value, float(info.get("is_success", 0.0) > 0.5))
            if u is not None:
                updates.append(u)
        if updates:
            n = self.num_timesteps
            for u in updates:
                self.events.append({"timesteps": n, **dataclasses.asdict(u)})
            # With boundary_focus every decision changes the boundaries' weights.
            if self.settings.boundary_focus > 0 or any(u.action != "keep" for u in updates):
                self.training_env.env_method(
                    "adr_set_ranges",
                    copy.deepcopy(self.state.ranges),
                    dict(self.state.last_success),
                )
            self._write_events()
        return True

    def _on_rollout_end(self) -> None:
        for name, (lo, hi) in self.state.ranges.items():
            self.logger.record(f"adr/{name}_low", lo)
            self.logger.record(f"adr/{name}_high", hi)
        self.logger.record("adr/nats_per_dimension", self.state.nats_per_dimension())
        self.logger.record("adr/boundary_episodes", self.boundary_episodes)

    def _write_events(self) -> None:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EVENT_COLUMNS, lineterminator="\n")
        w.writeheader()
        for row in self.events:
            w.writerow({k: _fmt(row.get(k, "")) for k in EVENT_COLUMNS})
        atomic_write_text(os.path.join(self.run_path, ADR_DIR, EVENTS_FILE), buf.getvalue())

    def save_state(self, timesteps: int) -> None:
        """Called before each checkpoint: ``state_<N>.json`` is complete before ``latest.json``
        can name step N, so a resumed run always finds the ranges of its checkpoint."""
        d = {"timesteps": int(timesteps), **self.state.to_dict()}
        text = json.dumps(d, indent=1)
        adr_dir = os.path.join(self.run_path, ADR_DIR)
        atomic_write_text(os.path.join(adr_dir, state_file(timesteps)), text)
        atomic_write_text(os.path.join(adr_dir, RANGES_FILE), text)
        self._prune(adr_dir, int(timesteps))

    def _prune(self, adr_dir: str, current: int) -> None:
        """Keep the states of the checkpoints that still exist (rundir keeps the newest two)."""
        ckdir = os.path.join(self.run_path, "checkpoints")
        models = set(os.listdir(ckdir)) if os.path.isdir(ckdir) else set()
        for name in os.listdir(adr_dir):
            if name.startswith("state_") and name.endswith(".json"):
                n = int(name[len("state_") : -len(".json")])
                if n != current and f"model_{n}.zip" not in models:
                    os.unlink(os.path.join(adr_dir, name))


def _fmt(v: Any) -> Any:
    return round(v, 6) if isinstance(v, float) else v
