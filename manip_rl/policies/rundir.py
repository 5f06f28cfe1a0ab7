"""The run directory: what ``manip-rl train`` writes and what evaluation, plotting, export and
resume read. This module is the contract (see DESIGN.md); keep its layout stable::

    RUN/config.yaml                  the resolved configuration (env_id, algo, seed, n_envs,
                                     total_timesteps, hyperparams, policy_kwargs, randomization...)
    RUN/checkpoints/latest.json      {"timesteps": N, "model": "model_N.zip",
                                      "vecnormalize": "vecnormalize_N.pkl"}
    RUN/checkpoints/model_N.zip, vecnormalize_N.pkl
    RUN/best/model.zip, best/vecnormalize.pkl, best/meta.json    best by randomized success
    RUN/final/model.zip, final/vecnormalize.pkl, final/meta.json
    RUN/logs/                        TensorBoard events and progress.csv
    RUN/eval/evaluations.csv         timesteps, wall_s, success_randomized, success_nominal, ...

Every file is written atomically (``manip_rl.fileio``), so a run killed with SIGKILL leaves each
checkpoint either complete or absent, and ``latest.json`` names only complete ones.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pickle
from typing import Any

import yaml

from manip_rl.fileio import atomic_path, atomic_write_text

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "latest.json"
BEST_DIR = "best"
FINAL_DIR = "final"
LOG_DIR = "logs"
EVAL_DIR = "eval"
EVAL_FILE = "evaluations.csv"
MODEL_FILE = "model.zip"
VECNORM_FILE = "vecnormalize.pkl"
META_FILE = "meta.json"
WHICH = ("best", "final", "latest")


class RunError(ValueError):
    """A run directory that cannot be used; the message names the path and what to do."""


@dataclasses.dataclass
class Run:
    """A training run on disk. Use :func:`load_run` to open one."""

    path: str
    config: dict[str, Any]

    # ------------------------------------------------------------ configuration
    @property
    def env_id(self) -> str:
        return str(self.config["env_id"])

    @property
    def algo(self) -> str:
        return str(self.config["algo"])

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def randomization(self) -> dict | None:
        """The randomization configuration dict the run trained with (None: nominal model)."""
        return self.config.get("randomization")

    @property
    def timesteps(self) -> int:
        """Environment steps of the newest saved model (final if the run finished)."""
        for which in ("final", "latest", "best"):
            try:
                return int(self.model_meta(which)["timesteps"])
            except RunError:
                continue
        return 0

    @property
    def eval_success(self) -> dict | None:
        """The latest evaluation, e.g. ``{"randomized": 0.96, "nominal": 0.98, "episodes": 50,
        "timesteps": 200000}``, or None when the run was never evaluated."""
        rows = self.evaluations()
        if not rows:
            return None
        last = rows[-1]
        return {
            "randomized": float(last["success_randomized"]),
            "nominal": float(last["success_nominal"]),
            "episodes": int(last["episodes"]),
            "timesteps": int(last["timesteps"]),
        }

    # ------------------------------------------------------------ files
    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def evaluations(self) -> list[dict[str, str]]:
        """Rows of ``eval/evaluations.csv`` (empty when absent)."""
        p = self.file(EVAL_DIR, EVAL_FILE)
        if not os.path.isfile(p):
            return []
        with open(p, newline="") as f:
            return list(csv.DictReader(f))

    def latest_checkpoint(self) -> dict | None:
        """``checkpoints/latest.json`` as a dict, or None when no checkpoint was written yet.
        Raises :class:`RunError` when the file is unreadable or names no model."""
        p = self.file(CHECKPOINT_DIR, LATEST_FILE)
        if not os.path.isfile(p):
            return None
        try:
            with open(p) as f:
                latest = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunError(
                f"{p}: not a readable checkpoint index ({e}); delete it to use the run's best or "
                f"final model, or restore it from the checkpoints/model_N.zip files"
            ) from None
        if (
            not isinstance(latest, dict)
            or not isinstance(latest.get("model"), str)
            or isinstance(latest.get("timesteps"), bool)
            or not isinstance(latest.get("timesteps"), int)
        ):
            raise RunError(
                f'{p}: expected {{"timesteps": N, "model": "model_N.zip", ...}}, got '
                f"{str(latest)[:80]}; delete it to use the run's best or final model"
            )
        return latest

    @property
    def normalizes(self) -> bool:
        """Whether the run's config declares VecNormalize (``normalize:`` set), so that every
        saved model must come with its statistics."""
        return bool(self.config.get("normalize"))

    def _model_file(self, which: str) -> str | None:
        """The model.zip of ``which`` when it exists (no checks beyond that, never raises)."""
        if which == "latest":
            try:
                latest = self.latest_checkpoint()
            except RunError:
                return None
            model = None if latest is None else self.file(CHECKPOINT_DIR, latest["model"])
        else:
            model = self.file(which, MODEL_FILE)
        return model if model is not None and os.path.isfile(model) else None

    def model_paths(self, which: str = "best") -> tuple[str, str | None]:
        """(model.zip, vecnormalize.pkl or None) of ``which`` in ("best", "final", "latest").

        Raises :class:`RunError` when the model is missing, and when the run's config declares
        normalization but the statistics are missing (a policy without them acts on raw
        observations and fails: refusing is the only safe answer)."""
        if which not in WHICH:
            raise RunError(f"which={which!r}: use one of {WHICH}")
        if which == "latest":
            latest = self.latest_checkpoint()
            if latest is None:
                raise RunError(
                    f"{self.path}: no checkpoint yet ({CHECKPOINT_DIR}/{LATEST_FILE} missing)"
                )
            model = self.file(CHECKPOINT_DIR, latest["model"])
            vn = latest.get("vecnormalize")
            vecnorm = self.file(CHECKPOINT_DIR, vn) if vn else None
            if vecnorm is None and self.normalizes:
                stem = os.path.splitext(os.path.basename(latest["model"]))[0]
                vecnorm = self.file(
                    CHECKPOINT_DIR, stem.replace("model_", "vecnormalize_") + ".pkl"
                )
        else:
            model = self.file(which, MODEL_FILE)
            vecnorm = self.file(which, VECNORM_FILE)
        if not os.path.isfile(model):
            others = [w for w in WHICH if w != which and self._has(w)]
            raise RunError(
                f"{self.path}: no {which} model ({os.path.relpath(model, self.path)} missing); "
                + (
                    f"this run has: {', '.join(others)} (pick it with --which/--model)"
                    if others
                    else "the run saved no model yet: let it train to its first checkpoint "
                    "or evaluation, or resume it with `manip-rl train --resume`"
                )
            )
        if vecnorm is not None and not os.path.isfile(vecnorm):
            if self.normalizes:
                raise RunError(
                    f"{self.path}: the {which} model has no normalization statistics "
                    f"({os.path.relpath(vecnorm, self.path)} missing), but the run's "
                    f"{CONFIG_FILE} says it normalizes (normalize: {self.config['normalize']}); "
                    "without them the policy would act on raw observations. Restore the file "
                    "or use another model of the run"
                )
            vecnorm = None
        return model, vecnorm

    def _has(self, which: str) -> bool:
        return self._model_file(which) is not None

    def default_which(self) -> str:
        """The model a user most likely wants: best, else final, else the latest checkpoint."""
        for which in ("best", "final", "latest"):
            if self._has(which):
                return which
        try:
            self.latest_checkpoint()
        except RunError as e:  # say why the checkpoint did not count
            raise RunError(f"{self.path}: the run has no best or final model, and {e}") from None
        raise RunError(
            f"{self.path}: the run saved no model yet (no best/, final/ or checkpoint); let it "
            "train to its first checkpoint, or resume it with `manip-rl train --resume`"
        )

    def model_meta(self, which: str = "best") -> dict:
        """``{"timesteps": N, ...}`` of a saved model."""
        if which == "latest":
            latest = self.latest_checkpoint()
            if latest is None:
                raise RunError(f"{self.path}: no checkpoint yet")
            return latest
        p = self.file(which, META_FILE)
        if not os.path.isfile(p):
            raise RunError(f"{self.path}: no {which} model")
        try:
            with open(p) as f:
                return json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RunError(f"{p}: unreadable ({e})") from None

    # ------------------------------------------------------------ loading
    def load_model(self, which: str = "best", device: str = "cpu", env: Any = None):
        """The SB3 model (PPO, A2C, TRPO, REINFORCE or PPOKL) saved as ``which``."""
        from manip_rl.policies.algorithms import algorithm_class

        model_path, _ = self.model_paths(which)
        return algorithm_class(self.algo).load(model_path, env=env, device=device)

    def load_vecnormalize(self, which: str = "best"):
        """The saved ``VecNormalize`` (statistics only: ``obs_rms``, ``clip_obs``, ``epsilon``,
        ``norm_obs_keys``; its ``venv`` is None) or None when the run did not normalize."""
        _, vecnorm_path = self.model_paths(which)
        if vecnorm_path is None:
            return None
        # VecNormalize pickles without its venv (see its __getstate__); unpickling needs no env.
        try:
            with open(vecnorm_path, "rb") as f:
                return pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as e:
            raise RunError(
                f"{vecnorm_path}: not readable normalization statistics ({type(e).__name__}: "
                f"{e}); restore it or use another model of the run"
            ) from None


def load_run(path: str | os.PathLike) -> Run:
    """Open the run directory ``path``; raises :class:`RunError` naming what is missing."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise RunError(
            f"run directory {path!r} does not exist; pass a directory made by `manip-rl train`"
        )
    cfg_path = os.path.join(path, CONFIG_FILE)
    if not os.path.isfile(cfg_path):
        raise RunError(f"{path!r} is not a run directory: {CONFIG_FILE} is missing")
    try:
        with open(cfg_path) as f:
            config = yaml.safe_load(f) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise RunError(f"{cfg_path}: not readable YAML ({e})") from None
    if not isinstance(config, dict):
        raise RunError(f"{cfg_path}: expected a mapping of configuration keys")
    for key in ("env_id", "algo"):
        if key not in config:
            raise RunError(f"{cfg_path}: key {key!r} is missing")
    return Run(path=path, config=config)


# ---------------------------------------------------------------- writing (used by training)
def write_config(path: str, config: dict) -> None:
    atomic_write_text(os.path.join(path, CONFIG_FILE), yaml.safe_dump(config, sort_keys=False))


def save_model_dir(model, vecnorm, directory: str, meta: dict) -> None:
    """Save model, statistics and meta into ``directory`` (best/ or final/), each atomically."""
    os.makedirs(directory, exist_ok=True)
    with atomic_path(os.path.join(directory, MODEL_FILE)) as tmp:
        model.save(tmp)
    if vecnorm is not None:
        with atomic_path(os.path.join(directory, VECNORM_FILE)) as tmp:
            vecnorm.save(tmp)
    atomic_write_text(os.path.join(directory, META_FILE), json.dumps(meta, indent=1))


def save_checkpoint(
    run_path: str, model, vecnorm, timesteps: int, keep: int = 2, extra: dict | None = None
) -> dict:
    """Write ``model_N.zip`` and ``vecnormalize_N.pkl`` atomically, then point ``latest.json`` at
    them (also atomically, so it never names a half-written file), then prune old ones."""
    ckdir = os.path.join(run_path, CHECKPOINT_DIR)
    os.makedirs(ckdir, exist_ok=True)
    entry: dict[str, Any] = {"timesteps": int(timesteps), "model": f"model_{timesteps}.zip"}
    with atomic_path(os.path.join(ckdir, entry["model"])) as tmp:
        model.save(tmp)
    if vecnorm is not None:
        entry["vecnormalize"] = f"vecnormalize_{timesteps}.pkl"
        with atomic_path(os.path.join(ckdir, entry["vecnormalize"])) as tmp:
            vecnorm.save(tmp)
    entry.update(extra or {})
    atomic_write_text(os.path.join(ckdir, LATEST_FILE), json.dumps(entry, indent=1))
    _prune(ckdir, keep, entry)
    return entry


def _prune(ckdir: str, keep: int, current: dict) -> None:
    steps = sorted(
        int(n[len("model_") : -len(".zip")])
        for n in os.listdir(ckdir)
        if n.startswith("model_") and n.endswith(".zip")
    )
    for n in steps[:-keep] if keep > 0 else []:
        if n == current["timesteps"]:
            continue
        for name in (f"model_{n}.zip", f"vecnormalize_{n}.pkl"):
            p = os.path.join(ckdir, name)
            if os.path.exists(p):
                os.unlink(p)
