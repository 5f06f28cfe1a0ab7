"""One trial of a sweep: a normal manip_rl run directory, trained (or resumed) in a Tune trial.

A trial's run directory is ``SWEEP/runs/<trial id>_<params>``, named by Tune's trial id, which
stays the same when Tune restarts the trial after its worker died. The trial function finds the
directory's latest checkpoint and resumes from it (``manip-rl train --resume`` semantics), so a
restart loses at most ``checkpoint_freq`` steps. ``RUN/trial.json`` records the trial's params
and every attempt (process, node, the step it started from).
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import socket
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from manip_rl.fileio import atomic_write_text
from manip_rl.policies import config as cfgmod
from manip_rl.policies import rundir

TRIAL_FILE = "trial.json"
RUNS_DIR = "runs"
METRICS = ("success_randomized", "success_nominal", "return_randomized", "return_nominal")


def trial_config(base: dict, params: dict) -> dict:
    """The run's configuration: ``base`` with each ``params`` entry (a dotted config key, such
    as ``hyperparams.learning_rate``) set; checked in full."""
    cfg = cfgmod.apply_overrides(base, [])
    for key, value in params.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
    return cfgmod.validate(cfg)


def run_name(trial_id: str, params: dict) -> str:
    """``<trial id>_<key=value,...>``, shortened and safe as a directory name."""
    tail = ",".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in sorted(params.items()))
    return f"{trial_id}_{re.sub(r'[^A-Za-z0-9_.=,+-]', '', tail)}"[:100]


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def last_eval(path: str) -> dict:
    """The run's last evaluation row as numbers (empty before its first)."""
    rows = rundir.Run(path, {}).evaluations()
    if not rows:
        return {}
    return {k: float(v) for k, v in rows[-1].items() if v not in ("", None)}


class TuneReport(BaseCallback):
    """Reports the run's progress to Tune after each rollout: steps, and the last evaluation
    (every metric present from the first report: Tune's searchers require it)."""

    def __init__(self, path: str, metric: str) -> None:
        super().__init__()
        self.path, self.metric = path, metric

    def report(self) -> None:
        from ray import tune

        tune.report(metrics(self.path, self.metric, self.model.num_timesteps))

    def _on_rollout_start(self) -> None:
        self.report()

    def _on_step(self) -> bool:
        return True


def metrics(path: str, metric: str, timesteps: int, done: bool = False) -> dict:
    row = last_eval(path)
    out = {k: row.get(k, 0.0) for k in METRICS}
    out.update(timesteps=int(timesteps), eval_timesteps=int(row.get("timesteps", 0)), done=done)
    out[metric] = row.get(metric, 0.0)
    return out


def run_trial(params: dict, spec: dict) -> None:
    """Tune's function trainable: train (or resume) this trial's run directory to the end."""
    from ray import tune

    from manip_rl.policies import train as trainmod

    trial_id = tune.get_context().get_trial_id()
    path = os.path.join(spec["sweep_dir"], RUNS_DIR, run_name(trial_id, params))
    cfg = trial_config(spec["base"], params)
    os.makedirs(path, exist_ok=True)
    run = rundir.Run(path, cfg)
    latest = run.latest_checkpoint() if os.path.isfile(run.file(rundir.CONFIG_FILE)) else None
    if latest is None:
        # Never checkpointed (or never started): begin afresh, dropping a partial attempt's logs.
        for d in (rundir.EVAL_DIR, rundir.LOG_DIR, rundir.BEST_DIR, rundir.FINAL_DIR):
            shutil.rmtree(run.file(d), ignore_errors=True)
        rundir.write_config(path, cfg)
    _record_attempt(path, trial_id, params, int(latest["timesteps"]) if latest else 0)
    if latest is None or latest["timesteps"] < cfg["total_timesteps"]:
        trainmod.train(path, cfg, progress=False, resume_from=latest,
                       extra_callbacks=[TuneReport(path, spec["metric"])])  # fmt: skip
    done = rundir.load_run(path).latest_checkpoint() or {"timesteps": 0}
    tune.report(metrics(path, spec["metric"], int(done["timesteps"]), done=True))


def _record_attempt(path: str, trial_id: str, params: dict, start_steps: int) -> None:
    import ray

    p = os.path.join(path, TRIAL_FILE)
    info: dict[str, Any] = {"trial_id": trial_id, "params": params, "attempts": []}
    if os.path.isfile(p):
        with open(p) as f:
            info = json.load(f)
    info["attempts"].append(
        {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "resumed_from_steps": start_steps,
        }
    )
    atomic_write_text(p, json.dumps(info, indent=1))
