"""``manip-rl sweep``: training runs over seeds and hyperparameters on Ray Tune.

A grid (``--grid KEY=V1,V2``, crossed with ``--seeds``) or an Optuna search through Ray Tune
(``--search KEY=loguniform:LO:HI``, ``--samples N``). Every trial is a normal manip_rl run
directory (checkpoints, resume, ``manip-rl eval``/``export``/``plot``). Runs on an embedded
local Ray by default, on a cluster with ``--address`` or ``RAY_ADDRESS``. A trial whose worker
dies is restarted by Tune (``--max-failures``) and resumes from its run's last checkpoint;
``manip-rl sweep --resume SWEEP`` continues a stopped sweep. The sweep directory::

    SWEEP/sweep.json                 the sweep: base config, grid or search, seeds, metric
    SWEEP/tune/                      Ray Tune's experiment state (what --resume restores)
    SWEEP/runs/<trial>/              one manip_rl run directory per trial (+ trial.json)
    SWEEP/summary.md, summary.csv    across seeds: mean and 95% interval, steps to a level
    SWEEP/success.png                success against steps, each seed and their mean
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from typing import Any

import yaml

from manip_rl.fileio import atomic_write_text
from manip_rl.policies import config as cfgmod
from manip_rl.policies.algorithms import ALGORITHMS

SPEC_FILE = "sweep.json"
TUNE_DIR = "tune"
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")


class SweepError(ValueError):
    """A sweep argument or directory that cannot be used; the message names it."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="PandaReach", help="a task or env id (default PandaReach)")
    p.add_argument("--algo", default="ppo", choices=ALGORITHMS, help="algorithm (default ppo)")
    p.add_argument("--config", help="a YAML file merged over the shipped configuration")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base configuration value for every trial; repeatable")  # fmt: skip
    p.add_argument("--timesteps", type=int, help="total_timesteps of every trial")
    p.add_argument("--seeds", default="0", help="the seeds, a list such as 0,1,2 (default 0)")
    p.add_argument("--n-seeds", type=int, help="seeds 0..N-1 (instead of --seeds)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a config key and its values (YAML, split on , or on ; where lists need the "
                        "commas), crossed with the seeds; repeatable")  # fmt: skip
    p.add_argument("--search", action="append", default=[], metavar="KEY=DIST:ARGS",
                   help="Optuna search over KEY: uniform:LO:HI, loguniform:LO:HI, int:LO:HI or "
                        "choice:A,B,C; repeatable (with one seed)")  # fmt: skip
    p.add_argument("--samples", type=int, default=8, help="--search: trials (default 8)")
    p.add_argument("--metric", default="success_randomized",
                   help="the evaluation column to summarize and search on (default "
                        "success_randomized)")  # fmt: skip
    p.add_argument("--success-level", type=float, default=0.8,
                   help="the table's steps-to-level column: first evaluation >= this (0.8)")  # fmt: skip
    p.add_argument("--sweep-dir", help="default runs/sweeps/<task>_<algo>_<time>")
    p.add_argument("--resume", metavar="SWEEP", help="continue the stopped sweep SWEEP")
    p.add_argument("--address",
                   help="the Ray cluster (host:port of the head); default RAY_ADDRESS, else an "
                        "embedded local Ray")  # fmt: skip
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="Ray CPUs a trial holds (1)")
    p.add_argument("--max-concurrent", type=int, default=0, help="trials at once (0: no limit)")
    p.add_argument("--max-failures", type=int, default=3,
                   help="restarts of a trial whose worker died, each from its last checkpoint")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress display")


# ------------------------------------------------------------------------------------ spec
def _parse_seeds(text: str, count: int | None) -> list[int]:
    if count is not None:
        if count < 1:
            raise SweepError(f"--n-seeds {count}: use 1 or more")
        return list(range(count))
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise SweepError(f"--seeds {text!r}: use a list of integers such as 0,1,2") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise SweepError(f"--seeds {text!r}: give distinct seeds >= 0, e.g. 0,1,2")
    return seeds


def _key(item: str, flag: str) -> tuple[str, str]:
    if "=" not in item:
        raise SweepError(f"{flag} {item!r}: write KEY=VALUES, e.g. hyperparams.learning_rate=...")
    key, raw = item.split("=", 1)
    key = key.strip()
    if key.split(".")[0] not in cfgmod.TOP_KEYS or key == "seed":
        raise SweepError(
            f"{flag} {key!r}: not a configuration key to vary"
            + (
                " (seeds go in --seeds)"
                if key == "seed"
                else f"; keys: {', '.join(cfgmod.TOP_KEYS)}"
            )
        )
    return key, raw


def _value(raw: str) -> Any:
    """A --grid/--search value read as YAML (``1e-4`` as a number, ``[64,64]`` as a list)."""
    try:
        v = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise SweepError(f"{raw!r} is not a valid YAML value ({e})") from None
    if isinstance(v, str):  # YAML 1.1 reads 1e-4 as a string
        try:
            return float(v)
        except ValueError:
            pass
    return v


def _parse_grid(items: list[str]) -> dict[str, list]:
    grid = {}
    for item in items:
        key, raw = _key(item, "--grid")
        # Values are split on ";" when there is one (lists: net_arch=[64,64];[256,256]).
        values = [_value(v) for v in raw.split(";" if ";" in raw else ",")]
        if not raw.strip() or len(values) < 1:
            raise SweepError(f"--grid {item!r}: give one or more values, e.g. {key}=1e-4,3e-4")
        grid[key] = values
    return grid


def _parse_search(items: list[str]) -> dict[str, list]:
    space = {}
    for item in items:
        key, raw = _key(item, "--search")
        dist, _, args = raw.partition(":")
        if dist not in DISTRIBUTIONS:
            raise SweepError(f"--search {item!r}: the distribution must be one of "
                             f"{', '.join(DISTRIBUTIONS)}, e.g. {key}=loguniform:1e-5:1e-3")  # fmt: skip
        try:
            if dist == "choice":
                vals = [_value(v) for v in args.split(",")]
            else:
                lo, hi = (float(x) for x in args.split(":"))
                if not lo < hi or (dist == "loguniform" and lo <= 0):
                    raise ValueError
                vals = [int(lo), int(hi)] if dist == "int" else [lo, hi]
        except ValueError:
            raise SweepError(f"--search {item!r}: {dist} needs LO:HI with LO < HI"
                             + (" and LO > 0" if dist == "loguniform" else "")) from None  # fmt: skip
        space[key] = [dist, vals]
    return space


def _check_trial(cfg: dict) -> None:
    """What a trial's configuration must have inside a sweep."""
    if not (cfg.get("eval") or {}).get("freq"):
        raise SweepError(
            "eval.freq is 0: a sweep summarizes and searches on its trials' evaluations; "
            "give eval.freq > 0 (e.g. --set eval.freq=50000)"
        )
    if cfg.get("vec_env") == "ray":
        raise SweepError(
            "vec_env ray inside a sweep trial: its actors would need CPUs beyond the trial's "
            "--cpus-per-trial and could wait for them forever; use vec_env chunked (the trial's "
            "own processes, with --cpus-per-trial to match)"
        )


def make_spec(args: argparse.Namespace, sweep_dir: str) -> dict:
    """The sweep, checked (every grid point's config too) before anything starts."""
    if args.grid and args.search:
        raise SweepError("--grid and --search: use one (a grid, or an Optuna search)")
    cfg = cfgmod.load_config(args.task, args.algo, args.config)
    if args.timesteps:
        cfg["total_timesteps"] = args.timesteps
    cfg = cfgmod.validate(cfgmod.apply_overrides(cfg, args.overrides))
    seeds = _parse_seeds(args.seeds, args.n_seeds)
    grid, search = _parse_grid(args.grid), _parse_search(args.search)
    if search and len(seeds) > 1:
        raise SweepError("--search runs one seed per sample: give one --seeds value, or use "
                         "--grid to repeat settings over seeds")  # fmt: skip
    if args.samples < 1:
        raise SweepError(f"--samples {args.samples}: use 1 or more")
    from manip_rl.distributed.sweep_trial import METRICS, trial_config

    if args.metric not in METRICS:
        raise SweepError(f"--metric {args.metric!r}: use one of {', '.join(METRICS)}")
    import itertools

    for values in itertools.product(*grid.values()):  # every grid point must be a valid run
        point = dict(zip(grid, values, strict=True))
        try:
            _check_trial(trial_config(cfg, {"seed": seeds[0], **point}))
        except (cfgmod.ConfigError, SweepError) as e:
            raise SweepError(f"--grid {point}: {e}") from None
    for key, (_, vals) in search.items():
        try:
            _check_trial(trial_config(cfg, {key: vals[0]}))
        except (cfgmod.ConfigError, SweepError) as e:
            raise SweepError(f"--search {key}: {e}") from None
    if not grid and not search:
        _check_trial(cfg)
    return {
        "sweep_dir": os.path.abspath(sweep_dir),
        "base": cfg,
        "seeds": seeds,
        "grid": grid,
        "search": search,
        "samples": args.samples if search else 1,
        "metric": args.metric,
        "success_level": args.success_level,
        "cpus_per_trial": args.cpus_per_trial,
        "max_concurrent": args.max_concurrent,
        "max_failures": args.max_failures,
    }


def param_space(spec: dict) -> dict:
    from ray import tune

    if spec["search"]:
        space: dict[str, Any] = {"seed": spec["seeds"][0]}
        for key, (dist, vals) in spec["search"].items():
            space[key] = _distribution(dist, vals)
        return space
    space = {"seed": tune.grid_search(spec["seeds"])}
    space.update({k: tune.grid_search(v) for k, v in spec["grid"].items()})
    return space


def _distribution(dist: str, vals: list):
    from ray import tune

    if dist == "uniform":
        return tune.uniform(vals[0], vals[1])
    if dist == "loguniform":
        return tune.loguniform(vals[0], vals[1])
    if dist == "int":
        return tune.randint(vals[0], vals[1] + 1)  # randint's upper bound is exclusive
    return tune.choice(vals)


# ------------------------------------------------------------------------------------ running
def _trainable(spec: dict):
    from ray import tune

    from manip_rl.distributed.sweep_trial import run_trial

    return tune.with_resources(tune.with_parameters(run_trial, spec=spec),
                               {"cpu": spec["cpus_per_trial"]})  # fmt: skip


def _run_config(spec: dict, progress: bool):
    from ray import tune

    callbacks = [Progress()] if progress else []
    return tune.RunConfig(
        name=TUNE_DIR,
        storage_path=spec["sweep_dir"],
        failure_config=tune.FailureConfig(max_failures=spec["max_failures"]),
        verbose=0,
        callbacks=callbacks,
    )


def tuner(spec: dict, progress: bool = True):
    """The Ray Tune ``Tuner`` of ``spec`` (Ray must be connected)."""
    from ray import tune

    search_alg = None
    if spec["search"]:
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(metric=spec["metric"], mode="max", seed=spec["seeds"][0])
    return tune.Tuner(
        _trainable(spec),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            num_samples=spec["samples"],
            search_alg=search_alg,
            metric=spec["metric"],
            mode="max",
            max_concurrent_trials=spec["max_concurrent"] or None,
            # A finished trial's worker process takes the next trial: torch, SB3 and MuJoCo stay
            # imported (bench/ray_sweep_overhead.py measures the fixed cost per trial).
            reuse_actors=True,
        ),
        run_config=_run_config(spec, progress),
    )


def run(args: argparse.Namespace) -> int:
    from manip_rl.distributed.ray_session import connect, import_ray

    try:
        if args.resume:
            spec = load_spec(args.resume)
        else:
            path = args.sweep_dir or os.path.join(
                "runs", "sweeps",
                f"{cfgmod.task_name(args.task)}_{args.algo}_{datetime.datetime.now():%Y%m%d_%H%M%S}",
            )  # fmt: skip
            if os.path.exists(os.path.join(path, SPEC_FILE)):
                raise SweepError(f"{path} already holds a sweep; continue it with --resume {path}")
            spec = make_spec(args, path)
    except (SweepError, cfgmod.ConfigError) as e:
        raise SystemExit(f"manip-rl sweep: {e}") from None
    ray = import_ray()
    owns = connect(args.address)
    try:
        if args.resume:
            from ray import tune

            t = tune.Tuner.restore(
                os.path.join(spec["sweep_dir"], TUNE_DIR),
                trainable=_trainable(spec),
                resume_unfinished=True,
                resume_errored=True,
            )
        else:
            os.makedirs(spec["sweep_dir"], exist_ok=True)
            atomic_write_text(
                os.path.join(spec["sweep_dir"], SPEC_FILE), json.dumps(spec, indent=1)
            )
            t = tuner(spec, progress=not args.no_progress)
        results = t.fit()
    finally:
        if owns:
            ray.shutdown()
    from manip_rl.distributed.sweep_report import write_summary

    text, _ = write_summary(spec["sweep_dir"], spec["metric"], spec["success_level"])
    print(text)
    errors = [r for r in results if r.error is not None]
    unfinished = [r for r in results if r.error is None and not (r.metrics or {}).get("done")]
    print(f"{spec['sweep_dir']}: {len(results)} trials, {len(errors)} failed, "
          f"{len(unfinished)} unfinished; summary.md, success.png")  # fmt: skip
    if errors or unfinished:
        print(f"continue it with `manip-rl sweep --resume {spec['sweep_dir']}` (each trial "
              "resumes from its run's last checkpoint)")  # fmt: skip
    return 1 if errors else 0


def load_spec(sweep_dir: str) -> dict:
    """The ``sweep.json`` of a sweep directory; SweepError when it is not one."""
    p = os.path.join(sweep_dir, SPEC_FILE)
    if not os.path.isfile(p) or not os.path.isdir(os.path.join(sweep_dir, TUNE_DIR)):
        raise SweepError(f"{sweep_dir!r} is not a sweep directory ({SPEC_FILE} or {TUNE_DIR}/ "
                         "missing); start one with `manip-rl sweep --sweep-dir DIR`")  # fmt: skip
    with open(p) as f:
        spec = json.load(f)
    spec["sweep_dir"] = os.path.abspath(sweep_dir)  # the directory may have moved
    return spec


def _tune_callback_base():
    from ray import tune

    return tune.Callback


class Progress(_tune_callback_base()):  # type: ignore[misc]
    """Prints every trial's state, steps and success every ``interval`` seconds and on each
    trial's end."""

    def __init__(self, interval: float = 15.0) -> None:
        self.interval, self.t0, self.last_print = interval, time.monotonic(), 0.0
        self.latest: dict[str, dict] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.latest[trial.trial_id] = result

    def _print(self, trials) -> None:
        from manip_rl.distributed.sweep_report import status_line

        state = [(t.trial_id, t.status, self.latest.get(t.trial_id, {})) for t in trials]
        print(status_line(state, time.monotonic() - self.t0), flush=True)
        self.last_print = time.monotonic()

    def on_step_end(self, iteration, trials, **info) -> None:
        if time.monotonic() - self.last_print >= self.interval:
            self._print(trials)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._print(trials)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        print(f"trial {trial.trial_id} failed (restarts left by --max-failures resume it from "
              "its last checkpoint)", flush=True)  # fmt: skip
