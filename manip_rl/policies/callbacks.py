"""The training run's SB3 callbacks: torch threads by phase, and the run callback
(checkpoints, periodic evaluation, best model, wall-clock limit)."""

from __future__ import annotations

import csv
import io
import os
import time
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback

from manip_rl.fileio import atomic_write_text
from manip_rl.policies import rundir

EVAL_COLUMNS = (
    "timesteps", "wall_s", "success_randomized", "success_nominal",
    "ci_randomized_low", "ci_randomized_high", "ci_nominal_low", "ci_nominal_high",
    "return_randomized", "return_nominal", "episodes",
)  # fmt: skip


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
