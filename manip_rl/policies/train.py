"""``manip-rl train``: train a policy on a randomized task, resumable after a kill.

Per-task hyperparameters come from the task's ``manip_rl/configs/tasks/<task>/train.yaml`` (its
``defaults`` merged with the algorithm's section), every value overridable with ``--set KEY=VALUE``. Training runs SB3's
on-policy loop over subprocess vector envs with VecNormalize; everything it produces goes into
one run directory (see :mod:`manip_rl.policies.rundir`).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from manip_rl.policies import config as cfgmod
from manip_rl.policies import rundir
from manip_rl.policies.algorithms import ALGORITHMS
from manip_rl.policies.callbacks import RunCallback, UpdateThreads
from manip_rl.policies.run_logs import ResumableCSV
from manip_rl.policies.run_logs import truncate_logs as _truncate_logs


# ------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    from manip_rl.envs import registry

    p.add_argument("--task", default="PandaPush",
                   help=f"{' | '.join(registry.names())}, or a full env id such as "
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
    p.add_argument("--n-envs", "--num-envs", dest="n_envs", type=int,
                   help="parallel environments (n_envs); with --backend warp, the worlds")  # fmt: skip
    p.add_argument("--backend", choices=cfgmod.BACKENDS,
                   help="cpu: SB3 over CPU envs (default); warp: batched MuJoCo Warp worlds on "
                        "--device, rsl_rl's PPO (docs/warp.md)")  # fmt: skip
    p.add_argument("--device", help="torch (and, for --backend warp, Warp) device: cpu | cuda")
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
        "env (SB3's SubprocVecEnv); dummy: all in the training process; ray: Ray actors on "
        "the cluster at RAY_ADDRESS, else on an embedded local Ray (docs/distributed.md)",
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
        "backend": getattr(args, "backend", None),
        "device": getattr(args, "device", None),
    }
    cfg.update({k: v for k, v in shortcuts.items() if v is not None})
    cfg = cfgmod.apply_overrides(cfg, args.overrides)
    # Checked in full, before any run directory exists; the randomization is resolved to its
    # ranges (the run records the ranges themselves).
    cfg = cfgmod.validate(cfg)
    if cfg["backend"] == "warp":  # what the batched backend trains (ppo, an MLP), checked too
        from manip_rl.policies.train_warp import check_config

        check_config(cfg)
    return cfg


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
        "--backend": getattr(args, "backend", None), "--device": getattr(args, "device", None),
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
    if cfg["vec_env"] == "ray":  # every n_envs: even one env may run on another node
        from manip_rl.distributed.ray_vec_env import RayVecEnv

        return RayVecEnv(
            fns, n_workers=cfg.get("n_workers"), seed=seed,
            transport=cfg.get("ray_transport", "direct"),
        )  # fmt: skip
    if cfg["vec_env"] == "chunked" and cfg["n_envs"] > 1:
        from manip_rl.policies.vec_env import ChunkedSubprocVecEnv

        return ChunkedSubprocVecEnv(fns, n_workers=cfg.get("n_workers"))
    if cfg["vec_env"] == "subproc" and cfg["n_envs"] > 1:
        return SubprocVecEnv(fns, start_method="forkserver")
    return DummyVecEnv(fns)


def train(
    path: str,
    cfg: dict,
    progress: bool = True,
    resume_from: dict | None = None,
    extra_callbacks: list | None = None,
) -> None:
    """Train the run at ``path`` (its config.yaml already written) with ``cfg``, from scratch or
    from the checkpoint ``resume_from`` (``latest.json``'s entry). ``cfg`` is checked first.
    ``extra_callbacks``: SB3 callbacks run after the run's own (a sweep reports through one)."""
    cfg = cfgmod.validate(cfg)
    if cfg["backend"] == "warp":
        from manip_rl.policies.train_warp import train_warp

        return train_warp(path, cfg, progress=progress, resume_from=resume_from)
    import torch
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import VecNormalize

    from manip_rl.policies.algorithms import algorithm_class, policy_class

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
            policy_class(cfg["algo"], cfg.get("policy", "MlpPolicy"), cfg["privileged_critic"]),
            venv,
            policy_kwargs=cfgmod.policy_kwargs(cfg),
            seed=cfg["seed"],
            device=cfg.get("device", "cpu"),
            verbose=0,
            **cfg.get("hyperparams", {}),
        )
    logger = configure(os.path.join(path, rundir.LOG_DIR), ["tensorboard"])
    logger.output_formats.append(ResumableCSV(os.path.join(path, rundir.LOG_DIR, "progress.csv")))
    model.set_logger(logger)

    cb = RunCallback(path, cfg, resume_from)
    if adr_cb is not None:
        cb.checkpoint_hooks.append(adr_cb.save_state)
    callbacks = [cb, UpdateThreads.for_config(cfg)]
    if adr_cb is not None:
        callbacks.append(adr_cb)
    callbacks += extra_callbacks or []
    remaining = cfg["total_timesteps"] - done_steps
    restore_sigterm = sigterm_as_interrupt()
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
        restore_sigterm()
    cb.finish()
    venv.close()


def _log_interval(cfg: dict) -> int:
    """Iterations between rows of progress.csv: the configured one, else about every 1000 steps."""
    if cfg.get("log_interval"):
        return int(cfg["log_interval"])
    per_iteration = int(cfg["hyperparams"].get("n_steps", 2048)) * int(cfg["n_envs"])
    return max(1, 1000 // per_iteration)


def sigterm_as_interrupt() -> Callable[[], Any]:
    """Make SIGTERM (a scheduler's stop) raise KeyboardInterrupt, so training ends as on Ctrl-C:
    with a checkpoint. Returns what puts the previous handler back. Only the main thread may set
    a handler (a Ray Tune trial trains in another thread); there nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    return lambda: signal.signal(signal.SIGTERM, old)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
