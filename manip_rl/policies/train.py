"""``manip-rl train``: train a policy on a randomized task, resumable after a kill.

Per-task hyperparameters come from the task's ``manip_rl/configs/tasks/<task>/train.yaml`` (its
``defaults`` merged with the algorithm's section), every value overridable with ``--set KEY=VALUE``. Training runs SB3's
on-policy loop over subprocess vector envs with VecNormalize; everything it produces goes into
one run directory (see :mod:`manip_rl.policies.rundir`).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import io
import os
import shutil
import signal
import sys
import time
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import CSVOutputFormat

from manip_rl.fileio import atomic_write_text
from manip_rl.policies import config as cfgmod
from manip_rl.policies import rundir
from manip_rl.policies.algorithms import ALGORITHMS

EVAL_COLUMNS = (
    "timesteps", "wall_s", "success_randomized", "success_nominal",
    "ci_randomized_low", "ci_randomized_high", "ci_nominal_low", "ci_nominal_high",
    "return_randomized", "return_nominal", "episodes",
)  # fmt: skip


# ------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="PandaPush",
                   help="PandaReach | PandaPush | PandaPickPlace, or a full env id such as "
                        "manip_rl/PandaPush-v0 (default PandaPush)")  # fmt: skip
    p.add_argument("--algo", default="ppo", choices=ALGORITHMS, help="algorithm (default ppo)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its latest checkpoint")
    p.add_argument("--run-dir", help="where to write the run (default runs/<task>_<algo>_<time>)")
    p.add_argument("--config", help="a YAML file merged over the shipped configuration")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any configuration value, e.g. hyperparams.learning_rate=1e-4, "
                        "policy_kwargs.net_arch=[64,64]; repeatable")  # fmt: skip
    p.add_argument("--timesteps", type=int, help="total environment steps (total_timesteps)")
    p.add_argument("--max-minutes", type=float,
                   help="wall-clock budget (max_minutes): stop with a last evaluation and "
                        "checkpoint once the run has trained this long, resumed time included")  # fmt: skip
    p.add_argument("--n-envs", type=int, help="parallel environments (n_envs)")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--randomization", help="default | none | a YAML path")
    p.add_argument("--dr", metavar="adr|YAML",
                   help="adr: automatic domain randomization, ranges grow from nominal as the "
                        "policy masters them; a YAML path: ADR with those settings "
                        "(docs/transfer.md)")  # fmt: skip
    p.add_argument(
        "--vec-env",
        choices=cfgmod.VEC_ENVS,
        help="chunked: a worker process per CPU stepping several envs; subproc: a process per "
        "env (SB3's SubprocVecEnv); dummy: all in the training process",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")


def resolve_config(args: argparse.Namespace) -> dict:
    cfg = cfgmod.load_config(args.task, args.algo, args.config)
    shortcuts = {
        "total_timesteps": args.timesteps,
        "max_minutes": args.max_minutes,
        "n_envs": args.n_envs,
        "seed": args.seed,
        "randomization": args.randomization,
        "vec_env": args.vec_env,
    }
    cfg.update({k: v for k, v in shortcuts.items() if v is not None})
    cfg = cfgmod.apply_overrides(cfg, args.overrides)
    # Checked in full, before any run directory exists; the randomization is resolved to its
    # ranges (the run records the ranges themselves).
    return cfgmod.validate(cfg)


def run(args: argparse.Namespace) -> int:
    try:
        if args.resume:
            return resume(args.resume, args)
        cfg = resolve_config(args)
        adr_settings = _adr_settings(args, cfg)
    except (cfgmod.ConfigError, rundir.RunError, ValueError) as e:
        raise SystemExit(f"manip-rl train: {e}") from None
    if args.print_config:
        import yaml

        print(yaml.safe_dump(cfg, sort_keys=False))
        return 0
    path = args.run_dir or os.path.join(
        "runs", f"{cfg['task']}_{cfg['algo']}_{datetime.datetime.now():%Y%m%d_%H%M%S}"
    )
    if os.path.exists(os.path.join(path, rundir.CONFIG_FILE)):
        raise SystemExit(
            f"manip-rl train: {path} already holds a run; use --resume {path} or another --run-dir"
        )
    created = not os.path.exists(path)
    os.makedirs(path, exist_ok=True)
    try:
        rundir.write_config(path, cfg)
        if adr_settings is not None:
            from manip_rl.transfer import adr_run

            adr_run.init_run(path, cfg, adr_settings)
        train(path, cfg, progress=not args.no_progress)
    except Exception as e:
        # A run that failed before saving any model is no run: leave no directory that every
        # later command would have to refuse (a run with a checkpoint is kept, to resume).
        if _saved_nothing(path):
            if created:
                shutil.rmtree(path, ignore_errors=True)
            else:
                for name in (rundir.CONFIG_FILE,):
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(path, name))
            raise SystemExit(
                f"manip-rl train: training could not start ({type(e).__name__}: {e}); "
                f"no run was written"
            ) from e
        raise
    return 0


def _saved_nothing(path: str) -> bool:
    """Whether the run directory holds no checkpoint, best or final model."""
    return not any(
        os.path.exists(os.path.join(path, *p))
        for p in (
            (rundir.CHECKPOINT_DIR, rundir.LATEST_FILE),
            (rundir.BEST_DIR, rundir.MODEL_FILE),
            (rundir.FINAL_DIR, rundir.MODEL_FILE),
        )
    )


def _adr_settings(args: argparse.Namespace, cfg: dict) -> dict | None:
    if not getattr(args, "dr", None):
        return None
    from manip_rl.transfer import adr, adr_run

    return adr.load_settings(args.dr, adr_run.task_of_config(cfg)).to_dict()


def resume(path: str, args: argparse.Namespace) -> int:
    r = rundir.load_run(path)
    try:
        cfgmod.validate(r.config)
    except cfgmod.ConfigError as e:
        raise SystemExit(f"manip-rl train: {path}/{rundir.CONFIG_FILE}: {e}") from None
    fixed = {
        "--set": args.overrides, "--config": args.config, "--n-envs": args.n_envs,
        "--seed": args.seed, "--randomization": args.randomization, "--vec-env": args.vec_env,
        "--dr": getattr(args, "dr", None),  # an ADR run resumes as one (RUN/adr/settings.json)
    }  # fmt: skip
    given = [flag for flag, v in fixed.items() if v]
    if given:
        raise SystemExit(
            f"manip-rl train: --resume continues {path} with its own config.yaml; "
            f"{', '.join(given)} cannot change it (only --timesteps and --max-minutes can "
            "extend it). Start a new run to train with other settings."
        )
    cfg = dict(r.config)
    if args.timesteps:
        cfg["total_timesteps"] = args.timesteps
    if args.max_minutes:
        cfg["max_minutes"] = args.max_minutes
    if cfg != r.config:
        rundir.write_config(path, cfg)
    if r.latest_checkpoint() is None:
        raise SystemExit(
            f"manip-rl train: {path} has no checkpoint to resume from; start it afresh"
        )
    limit = cfg.get("max_minutes")
    if limit and float(r.latest_checkpoint().get("wall_s", 0.0)) >= 60.0 * float(limit):
        print(f"{path} is complete (max_minutes={limit}); extend it with --max-minutes M")
        return 0
    if r.latest_checkpoint()["timesteps"] >= cfg["total_timesteps"]:
        print(f"{path} is complete ({cfg['total_timesteps']} steps); extend it with --timesteps N")
        return 0
    train(path, cfg, progress=not args.no_progress, resume_from=r.latest_checkpoint())
    return 0


# ------------------------------------------------------------------------------------ training
def make_vec_env(cfg: dict, seed: int, wrap: Any = None):
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    # Train on exactly the run's randomization. env_factory(randomized=True) falls back to the
    # task's default ranges for a run without any (right for judging a nominal-only run under
    # randomization, wrong for training it).
    randomized = cfgmod.randomization_dict(cfg) is not None
    fns = [
        cfgmod.env_factory(
            cfg, randomized=randomized, seed=seed + i, env_kwargs=cfg.get("train_env_kwargs")
        )
        for i in range(cfg["n_envs"])
    ]  # train_env_kwargs: training aids (evaluations build their envs without them)
    if wrap is not None:  # ADR: each env draws its episodes from the current ADR ranges
        fns = [wrap(f) for f in fns]
    if cfg["vec_env"] == "chunked" and cfg["n_envs"] > 1:
        from manip_rl.policies.vec_env import ChunkedSubprocVecEnv

        return ChunkedSubprocVecEnv(fns, n_workers=cfg.get("n_workers"))
    if cfg["vec_env"] == "subproc" and cfg["n_envs"] > 1:
        return SubprocVecEnv(fns, start_method="forkserver")
    return DummyVecEnv(fns)


def train(path: str, cfg: dict, progress: bool = True, resume_from: dict | None = None) -> None:
    """Train the run at ``path`` (its config.yaml already written) with ``cfg``, from scratch or
    from the checkpoint ``resume_from`` (``latest.json``'s entry). ``cfg`` is checked first."""
    cfg = cfgmod.validate(cfg)
    import torch
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import VecNormalize

    from manip_rl.policies.algorithms import algorithm_class

    torch.set_num_threads(int(cfg.get("torch_threads", 1)))
    algo_cls = algorithm_class(cfg["algo"])
    done_steps = int(resume_from["timesteps"]) if resume_from else 0
    from manip_rl.transfer.adr_callback import AdrCallback

    adr_cb = AdrCallback.for_run(path, cfg, resume_from)  # None unless the run uses --dr adr
    venv = make_vec_env(cfg, cfg["seed"] + done_steps, adr_cb.wrap_factory if adr_cb else None)
    norm = cfg.get("normalize") or None
    ckdir = os.path.join(path, rundir.CHECKPOINT_DIR)
    if resume_from:
        vn_name = resume_from.get("vecnormalize")
        if norm and not (vn_name and os.path.isfile(os.path.join(ckdir, vn_name))):
            venv.close()
            raise rundir.RunError(
                f"{path}: the checkpoint at {done_steps} steps has no normalization statistics "
                f"({vn_name or 'none named in ' + rundir.LATEST_FILE}), but the run normalizes; "
                "resuming would restart them from zero. Restore the file or start a new run"
            )
        _truncate_logs(path, done_steps)
        if vn_name:
            venv = VecNormalize.load(os.path.join(ckdir, vn_name), venv)
            venv.training = True
        model = algo_cls.load(
            os.path.join(ckdir, resume_from["model"]), env=venv, device=cfg.get("device", "cpu")
        )
        model.num_timesteps = done_steps
    else:
        if norm:
            venv = VecNormalize(venv, gamma=cfg["hyperparams"].get("gamma", 0.99), **norm)
        model = algo_cls(
            cfg.get("policy", "MlpPolicy"),
            venv,
            policy_kwargs=cfgmod.policy_kwargs(cfg),
            seed=cfg["seed"],
            device=cfg.get("device", "cpu"),
            verbose=0,
            **cfg.get("hyperparams", {}),
        )
    logger = configure(os.path.join(path, rundir.LOG_DIR), ["tensorboard"])
    logger.output_formats.append(_ResumableCSV(os.path.join(path, rundir.LOG_DIR, "progress.csv")))
    model.set_logger(logger)

    cb = RunCallback(path, cfg, resume_from)
    if adr_cb is not None:
        cb.checkpoint_hooks.append(adr_cb.save_state)
    callbacks = [cb, UpdateThreads.for_config(cfg)]
    if adr_cb is not None:
        callbacks.append(adr_cb)
    remaining = cfg["total_timesteps"] - done_steps
    # SIGTERM (a scheduler's stop) ends training like Ctrl-C: with a checkpoint.
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if remaining > 0:
            model.learn(
                remaining,
                callback=callbacks,
                reset_num_timesteps=False,
                log_interval=_log_interval(cfg),
                progress_bar=progress and sys.stderr.isatty(),
                tb_log_name="tb",
            )
    except KeyboardInterrupt:
        cb.save_checkpoint()
        print(f"\ninterrupted at {model.num_timesteps} steps; continue with "
              f"`manip-rl train --resume {path}`")  # fmt: skip
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGTERM, old)
    cb.finish()
    venv.close()


def _log_interval(cfg: dict) -> int:
    """Iterations between rows of progress.csv: the configured one, else about every 1000 steps."""
    if cfg.get("log_interval"):
        return int(cfg["log_interval"])
    per_iteration = int(cfg["hyperparams"].get("n_steps", 2048)) * int(cfg["n_envs"])
    return max(1, 1000 // per_iteration)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _truncate_logs(path: str, steps: int) -> None:
    """Drop log rows and TensorBoard events written after the checkpoint a run resumes from:
    they describe training that the kill threw away, and the resumed run writes those steps
    again."""
    _truncate_tensorboard(os.path.join(path, rundir.LOG_DIR), steps)
    for rel, key in (
        ((rundir.LOG_DIR, "progress.csv"), "time/total_timesteps"),
        ((rundir.EVAL_DIR, rundir.EVAL_FILE), "timesteps"),
    ):
        p = os.path.join(path, *rel)
        if not os.path.isfile(p):
            continue
        with open(p, newline="") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            rows = [row for row in reader if _int(row.get(key)) <= steps]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(p, buf.getvalue())


def _truncate_tensorboard(log_dir: str, steps: int) -> None:
    """Rewrite each TensorBoard event file in ``log_dir`` without its events past ``steps``.

    Rewritten rather than hidden with a purge marker (SummaryWriter's purge_step): the marker
    is honoured by TensorBoard's Python reader but not by every reader (its Rust data server,
    pandas exports), and a user should see each step once in all of them. A file cut short by
    the kill ends at its last complete record."""
    if not os.path.isdir(log_dir):
        return
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    from manip_rl.fileio import atomic_write_bytes

    for name in sorted(os.listdir(log_dir)):
        p = os.path.join(log_dir, name)
        if not name.startswith("events.out.tfevents") or not os.path.isfile(p):
            continue
        records = list(RawEventFileLoader(p).Load())
        kept = [r for r in records if Event.FromString(r).step <= steps]
        if len(kept) == len(records) and _complete(p, records):
            continue
        buf = io.BytesIO()
        writer = RecordWriter(buf)
        for r in kept:
            writer.write(r)
        atomic_write_bytes(p, buf.getvalue())


def _complete(path: str, records: list[bytes]) -> bool:
    """Whether ``records`` (each framed in 16 bytes) fill the file: no truncated tail."""
    return os.path.getsize(path) == sum(len(r) + 16 for r in records)


def _int(v: Any) -> int:
    try:
        return int(float(v))
    except (TypeError, ValueError):
        return 0


class _ResumableCSV(CSVOutputFormat):
    """SB3's CSV logger that continues an existing progress.csv (SB3's own truncates it)."""

    def __init__(self, filename: str) -> None:
        self.separator, self.quotechar = ",", '"'
        if os.path.isfile(filename) and os.path.getsize(filename) > 0:
            self.file = open(filename, "r+")  # noqa: SIM115 - closed by close()
            header = self.file.readline().strip()
            self.keys = header.split(",") if header else []
            self.file.seek(0, os.SEEK_END)
        else:
            os.makedirs(os.path.dirname(filename), exist_ok=True)
            self.file = open(filename, "w+")  # noqa: SIM115
            self.keys = []


# ------------------------------------------------------------------------------------ callback
class UpdateThreads(BaseCallback):
    """Torch threads by phase: ``rollout`` threads while the envs step (the worker processes
    need the cores then), ``update`` threads for the gradient steps, when the workers wait
    (bench/train_throughput.py measures both)."""

    def __init__(self, rollout: int, update: int) -> None:
        super().__init__()
        self.rollout, self.update = rollout, update

    @staticmethod
    def for_config(cfg: dict) -> UpdateThreads:
        rollout = int(cfg.get("torch_threads", 1))
        update = cfg.get("update_threads", "auto")
        if update == "auto":
            update = max(rollout, len(os.sched_getaffinity(0)))
        return UpdateThreads(rollout, int(update))

    @staticmethod
    def _use(threads: int) -> None:
        import torch

        torch.set_num_threads(threads)

    def _on_training_start(self) -> None:
        self._use(self.rollout)

    def _on_rollout_end(self) -> None:
        self._use(self.update)

    def _on_rollout_start(self) -> None:
        self._use(self.rollout)

    def _on_training_end(self) -> None:
        self._use(self.rollout)

    def _on_step(self) -> bool:
        return True


class RunCallback(BaseCallback):
    """Checkpoints, periodic evaluation (randomized and nominal), best model, wall-clock log."""

    def __init__(self, path: str, cfg: dict, resume_from: dict | None) -> None:
        super().__init__()
        self.path, self.cfg = path, cfg
        ev = cfg.get("eval") or {}
        self.eval_freq = int(ev.get("freq", 0))
        self.eval_episodes = int(ev.get("episodes", 40))
        self.checkpoint_freq = int(cfg.get("checkpoint_freq", 0))
        self.wall_offset = float((resume_from or {}).get("wall_s", 0.0))
        steps = int((resume_from or {}).get("timesteps", 0))
        self.last_eval = self.last_ckpt = steps
        self.best = self._read_best()
        self.t0 = time.monotonic()
        limit = cfg.get("max_minutes")
        self.max_wall_s = 60.0 * float(limit) if limit else None
        self.out_of_time = False
        self._evaluators: dict[bool, Any] = {}
        # Called with the step count before each checkpoint is written (ADR saves its ranges).
        self.checkpoint_hooks: list[Any] = []

    def _read_best(self) -> tuple[float, float]:
        p = os.path.join(self.path, rundir.BEST_DIR, rundir.META_FILE)
        if os.path.isfile(p):
            import json

            with open(p) as f:
                m = json.load(f)
            return float(m.get("success_randomized", -1)), float(m.get("success_nominal", -1))
        return -1.0, -1.0

    @property
    def wall_s(self) -> float:
        return self.wall_offset + time.monotonic() - self.t0

    def _vecnorm(self):
        from stable_baselines3.common.vec_env import VecNormalize

        env = self.model.get_env()
        return env if isinstance(env, VecNormalize) else None

    def _on_step(self) -> bool:
        return not self.out_of_time

    def _on_rollout_end(self) -> None:
        # How often the sampled actions fall outside [-1, 1], per action dimension: the env
        # clips them, so a policy whose mean drifts past a bound no longer explores that
        # direction (a PandaPickPlace run held the TCP down, z = -1, all along; it never lifted).
        buf = getattr(self.model, "rollout_buffer", None)
        actions = getattr(buf, "actions", None)
        if isinstance(actions, np.ndarray) and actions.ndim == 3 and actions.size:
            out = np.abs(actions.reshape(-1, actions.shape[-1])) > 1.0
            frac = out.mean(axis=0)
            self.logger.record("rollout/actions_out_of_bounds", float(out.mean()))
            for i, f in enumerate(frac):
                self.logger.record(f"actions/out_of_bounds_{i}", float(f))

    def _on_rollout_start(self) -> None:
        # Called after each update: the saved model has learned from every counted step.
        n = self.model.num_timesteps
        self.logger.record("time/wall_s", round(self.wall_s, 2))
        if self.max_wall_s is not None and self.wall_s >= self.max_wall_s:
            self.out_of_time = True  # _on_step ends learn(); finish() evaluates and saves
            print(f"\n{self.path}: max_minutes={self.cfg['max_minutes']} reached at {n} steps")
            return
        if self.eval_freq and n - self.last_eval >= self.eval_freq:
            self.evaluate()
        if self.checkpoint_freq and n - self.last_ckpt >= self.checkpoint_freq:
            self.save_checkpoint()

    def save_checkpoint(self) -> None:
        n = self.model.num_timesteps
        for hook in self.checkpoint_hooks:
            hook(n)
        rundir.save_checkpoint(
            self.path, self.model, self._vecnorm(), n, extra={"wall_s": round(self.wall_s, 2)}
        )
        self.last_ckpt = n

    def evaluate(self) -> dict:
        from manip_rl.policies.evaluate import Evaluator

        n = self.model.num_timesteps
        vecnorm = self._vecnorm()
        results = {}
        for cond, randomized in (("randomized", True), ("nominal", False)):
            if randomized not in self._evaluators:
                self._evaluators[randomized] = Evaluator(
                    self.cfg, randomized, n_envs=min(8, self.eval_episodes)
                )
            results[cond] = self._evaluators[randomized].run(
                self.model, vecnorm, self.eval_episodes
            )
        r, nom = results["randomized"], results["nominal"]
        row = {
            "timesteps": n,
            "wall_s": round(self.wall_s, 2),
            "success_randomized": r.success_rate,
            "success_nominal": nom.success_rate,
            "ci_randomized_low": round(r.interval[0], 4),
            "ci_randomized_high": round(r.interval[1], 4),
            "ci_nominal_low": round(nom.interval[0], 4),
            "ci_nominal_high": round(nom.interval[1], 4),
            "return_randomized": round(r.mean_return, 4),
            "return_nominal": round(nom.mean_return, 4),
            "episodes": self.eval_episodes,
        }
        self._append_eval(row)
        self.logger.record("eval/success_randomized", r.success_rate)
        self.logger.record("eval/success_nominal", nom.success_rate)
        self.logger.record("eval/return_randomized", r.mean_return)
        self.logger.record("eval/return_nominal", nom.mean_return)
        if (r.success_rate, nom.success_rate) > self.best:
            self.best = (r.success_rate, nom.success_rate)
            rundir.save_model_dir(
                self.model,
                vecnorm,
                os.path.join(self.path, rundir.BEST_DIR),
                {"timesteps": n, "success_randomized": r.success_rate,
                 "success_nominal": nom.success_rate, "episodes": self.eval_episodes},
            )  # fmt: skip
        self.last_eval = n
        return row

    def _append_eval(self, row: dict) -> None:
        p = os.path.join(self.path, rundir.EVAL_DIR, rundir.EVAL_FILE)
        rows = []
        if os.path.isfile(p):
            with open(p, newline="") as f:
                rows = list(csv.DictReader(f))
        rows.append(row)
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=EVAL_COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(p, buf.getvalue())

    def finish(self) -> None:
        """End of training: a last evaluation, a checkpoint and the final model."""
        n = self.model.num_timesteps
        row = self.evaluate() if self.eval_freq and n > self.last_eval else None
        self.save_checkpoint()
        meta = {"timesteps": n, "wall_s": round(self.wall_s, 2)}
        if row:
            meta.update(success_randomized=row["success_randomized"],
                        success_nominal=row["success_nominal"])  # fmt: skip
        rundir.save_model_dir(
            self.model, self._vecnorm(), os.path.join(self.path, rundir.FINAL_DIR), meta
        )
        for e in self._evaluators.values():
            e.close()
        print(f"{self.path}: {n} steps in {self.wall_s:.0f} s"
              + (f"; success randomized {row['success_randomized']:.0%}, nominal "
                 f"{row['success_nominal']:.0%}" if row else ""))  # fmt: skip
