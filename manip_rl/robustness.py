"""``manip-rl robustness POLICY...``: how a policy's success falls off as the world departs from
the one it trained in.

For each quantity (mass, friction, joint damping, actuator gain, action latency, observation
latency, observation noise) the policy runs ``--episodes`` episodes at every value of a sweep with
everything else nominal; then it runs the shift sets (by default the held-out dynamics set,
``manip_rl/configs/heldout/*.yaml``, several shifts at once). Episode ``k`` is seeded ``seed + k``
at every point and for every policy, so all points and policies face the same goals and starts.

Writes ``OUT/robustness.csv`` (one row per policy and point, with the 95% Wilson interval),
``OUT/robustness.md`` (the tables) and ``OUT/robustness.png`` (one panel per quantity, one line per
policy with its interval; the hand-set training range is shaded).

``--boundaries RANGES`` runs ADR's test instead: each end of each range of RANGES (an ADR run
directory, ``default`` or a randomization YAML) with that quantity pinned and the others drawn
from their ranges, with what ADR's rule would do there (``boundaries.{csv,md,png}``).

A POLICY is a policy file (``manip-rl export``), a run directory (exported on the fly), or
``scripted:ENV_ID`` (the scripted controller, a reference that knows the task but not the
physics).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import glob
import io
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from manip_rl import policy_io
from manip_rl.envs.randomization import (
    CONFIG_DIR,
    RandomizationConfig,
    RandomizationConfigError,
    Range,
    load_config,
)
from manip_rl.fileio import atomic_path, atomic_write_text
from manip_rl.stats import wilson_interval

HELDOUT_DIR = os.path.join(os.path.dirname(__file__), "configs", "heldout")
NOMINAL = "nominal"
CSV_COLUMNS = ("policy", "kind", "quantity", "value", "successes", "episodes", "success",
               "ci_low", "ci_high")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Quantity:
    """One swept quantity: ``physics`` are the randomization keys it scales."""

    name: str
    label: str
    nominal: float
    values: tuple[float, ...]
    physics: tuple[str, ...] = ()
    log_x: bool = True


QUANTITIES: dict[str, Quantity] = {
    q.name: q
    for q in (
        Quantity("mass_scale", "mass (arm links, object) ×", 1.0,
                 (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0), ("link_mass", "object_mass")),
        Quantity("friction_scale", "friction ×", 1.0,
                 (0.25, 0.5, 0.7, 1.0, 1.3, 2.0, 3.0), ("friction",)),
        Quantity("damping_scale", "joint damping ×", 1.0,
                 (0.1, 0.3, 1.0, 3.0, 5.0, 10.0), ("joint_damping",)),
        Quantity("actuator_gain_scale", "actuator gain (servo kp) ×", 1.0,
                 (0.4, 0.5, 0.75, 1.0, 1.5, 2.0), ("actuator_gain",)),
        Quantity("action_latency", "action latency (control steps of 40 ms)", 0,
                 (0, 1, 2, 3, 4), log_x=False),
        Quantity("observation_latency", "observation latency (control steps of 40 ms)", 0,
                 (0, 1, 2, 3, 4), log_x=False),
        Quantity("observation_noise", "sensor noise × the task's default std", 0.0,
                 (0.0, 1.0, 3.0, 10.0, 30.0), log_x=False),
    )
}  # fmt: skip


class RobustnessError(ValueError):
    """Bad input to the sweep; the message says what and what to do."""


# ------------------------------------------------------------------------------------ shifts
def shift_config(task: str, shifts: Mapping[str, float]) -> RandomizationConfig:
    """A configuration with the named quantities fixed at the given values and everything else
    nominal (no noise, no latency, no bias)."""
    physics: dict[str, Range] = {}
    kw: dict[str, Any] = {}
    for name, value in shifts.items():
        if name not in QUANTITIES:
            raise RobustnessError(f"unknown quantity {name!r}; known: {', '.join(QUANTITIES)}")
        q, v = QUANTITIES[name], float(value)
        if q.physics:
            if v <= 0:
                raise RobustnessError(f"{name}={v}: a scale factor must be > 0")
            for key in q.physics:
                physics[key] = Range("uniform", "scale", low=v, high=v)
        elif name in ("action_latency", "observation_latency"):
            if v < 0 or v != int(v) or v > 10:
                raise RobustnessError(f"{name}={v}: whole control steps from 0 to 10")
            kw[name] = (int(v), int(v))
        else:
            if v < 0:
                raise RobustnessError(f"{name}={v}: a noise multiplier cannot be negative")
            ref = _default_config(task)
            noise = dict(ref.observation_noise) if ref is not None else {}
            kw["observation_noise"] = {k: std * v for k, std in noise.items()}
    return RandomizationConfig(physics=physics, **kw)


def _default_config(task: str) -> RandomizationConfig | None:
    return load_config(os.path.join(CONFIG_DIR, f"{task}.yaml"), task)


def training_range(task: str, quantity: str) -> tuple[float, float] | None:
    """The hand-set default training range of a quantity (what the plot shades)."""
    cfg = _default_config(task)
    if cfg is None:
        return None
    q = QUANTITIES[quantity]
    if q.physics:
        r = cfg.physics.get(q.physics[0])
        return None if r is None else r.bounds()
    if quantity in ("action_latency", "observation_latency"):
        return tuple(float(x) for x in getattr(cfg, quantity))
    return (0.0, 1.0) if cfg.observation_noise else None


def load_shift_sets(paths: Sequence[str], task: str) -> dict[str, RandomizationConfig]:
    """Shift sets by name (file stem) from YAML files or directories of them."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            files.extend(sorted(glob.glob(os.path.join(p, "*.yaml"))))
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise RobustnessError(
                f"shift set {p!r} does not exist; pass a randomization YAML file or a directory "
                f"of them (the held-out set is {HELDOUT_DIR})"
            )
    out = {}
    for f in files:
        try:
            out[os.path.splitext(os.path.basename(f))[0]] = load_config(f, task)
        except RandomizationConfigError as e:
            raise RobustnessError(str(e)) from None
    return out


def heldout_sets(task: str) -> dict[str, RandomizationConfig]:
    """The held-out dynamics set (docs/transfer.md): never used by a training config."""
    return load_shift_sets([HELDOUT_DIR], task)


# ------------------------------------------------------------------------------------ policies
class Actor:
    """What the sweep runs: a name, an env id, an action mode, and batched acting."""

    label: str
    env_id: str
    action_mode: str
    task: str

    def bind(self, envs: Sequence[Any]) -> Callable[[list[dict]], np.ndarray]:
        raise NotImplementedError


class FileActor(Actor):
    def __init__(self, policy: Any, label: str) -> None:
        self.policy, self.label = policy, label
        self.env_id, self.task = policy.env_id, policy.task
        self.action_mode = policy.action_spec.mode

    def bind(self, envs: Sequence[Any]) -> Callable[[list[dict]], np.ndarray]:
        def act(obs: list[dict]) -> np.ndarray:
            flat = np.stack([policy_io.flatten_observation(o) for o in obs])
            return self.policy.act(flat)

        return act


class ScriptedActor(Actor):
    def __init__(self, env_id: str, action_mode: str = policy_io.JOINT_DELTA) -> None:
        import gymnasium as gym

        import manip_rl  # noqa: F401  (registers the envs)

        if env_id not in gym.registry:
            raise RobustnessError(f"scripted:{env_id}: no such environment id")
        self.env_id, self.action_mode = env_id, action_mode
        self.label = f"scripted:{env_id.split('/')[-1]}"
        env = gym.make(env_id)
        self.task = env.unwrapped.task
        env.close()
        if self.task not in ("reach", "push"):
            raise RobustnessError(
                f"scripted:{env_id}: there is a scripted controller for Reach and Push only"
            )

    def bind(self, envs: Sequence[Any]) -> Callable[[list[dict]], np.ndarray]:
        from manip_rl.envs.scripted import scripted_policy

        ctrls = [scripted_policy(e) for e in envs]
        # The last batch of a point may hold fewer episodes than there are envs.
        return lambda obs: np.stack([c(o) for c, o in zip(ctrls[: len(obs)], obs, strict=True)])


def load_actor(spec: str, tmpdir: str, which: str | None = None) -> Actor:
    """A policy file, a run directory (its ``which`` model: best/final/latest, by default the
    best, else final, else latest; exported into ``tmpdir``), or ``scripted:ENV_ID``."""
    from manip_rl.export import PolicyFileError, export_policy, load_policy

    if spec.startswith("scripted:"):
        return ScriptedActor(spec.split(":", 1)[1])
    label = os.path.basename(os.path.normpath(spec))
    path = spec
    if os.path.isdir(spec):
        path = os.path.join(tmpdir, f"{len(os.listdir(tmpdir))}_{label}.pt")
        try:
            export_policy(spec, path, which=which)
        except ValueError as e:
            raise RobustnessError(f"{spec}: cannot export the run's policy: {e}") from None
    elif not os.path.isfile(spec):
        raise RobustnessError(
            f"POLICY {spec!r} is neither a policy file, a run directory nor scripted:ENV_ID"
        )
    else:
        label = os.path.splitext(label)[0]
    try:
        return FileActor(load_policy(path), label)
    except PolicyFileError as e:
        raise RobustnessError(str(e)) from None


# ------------------------------------------------------------------------------------ evaluation
@dataclasses.dataclass
class Point:
    policy: str
    kind: str  # "sweep" | "shift_set"
    quantity: str  # the swept quantity, or the shift set's name
    value: float | str
    successes: int
    episodes: int

    @property
    def success(self) -> float:
        return self.successes / self.episodes

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.episodes)

    def row(self) -> dict:
        lo, hi = self.interval
        return {
            "policy": self.policy, "kind": self.kind, "quantity": self.quantity,
            "value": self.value, "successes": self.successes, "episodes": self.episodes,
            "success": round(self.success, 4), "ci_low": round(lo, 4), "ci_high": round(hi, 4),
        }  # fmt: skip


class Runner:
    """A batch of environments for one actor; runs whole episodes under a configuration."""

    def __init__(self, actor: Actor, n_envs: int = 8) -> None:
        import gymnasium as gym

        import manip_rl  # noqa: F401

        self.actor = actor
        if isinstance(actor, FileActor) and actor.policy.format == "torchscript":
            import torch

            # A batch of 8 observations through a small MLP: one thread is fastest, and more
            # threads only contend with the physics on a busy machine.
            torch.set_num_threads(1)
        self.envs = [
            gym.make(actor.env_id, action_mode=actor.action_mode) for _ in range(max(1, n_envs))
        ]
        self.act = actor.bind(self.envs)

    def close(self) -> None:
        for e in self.envs:
            e.close()

    def successes(
        self,
        config: RandomizationConfig | None,
        episodes: int,
        seed: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> int:
        from manip_rl.adr import set_env_randomization

        for e in self.envs:
            set_env_randomization(e, config)
        wins = 0
        for start in range(0, episodes, len(self.envs)):
            batch = self.envs[: min(len(self.envs), episodes - start)]
            obs = [e.reset(seed=seed + start + i)[0] for i, e in enumerate(batch)]
            done = np.zeros(len(batch), bool)
            last: list[dict] = [{} for _ in batch]
            while not done.all():
                actions = self.act(obs)
                for i, e in enumerate(batch):
                    if done[i]:
                        continue
                    obs[i], _, term, trunc, last[i] = e.step(actions[i])
                    done[i] = term or trunc
            wins += sum(int(info.get("is_success", 0.0) > 0.5) for info in last)
            if on_batch:
                on_batch(len(batch))
        return wins


def _one_task(actors: Sequence[Actor], episodes: int) -> str:
    if episodes < 1:
        raise RobustnessError("--episodes must be at least 1")
    tasks = {a.task for a in actors}
    if len(tasks) != 1:
        raise RobustnessError(
            f"the policies are for different tasks ({', '.join(sorted(tasks))}); compare "
            f"policies of one task per plot"
        )
    return tasks.pop()


def sweep(
    actors: Sequence[Actor],
    quantities: Mapping[str, Sequence[float]],
    shift_sets: Mapping[str, RandomizationConfig],
    episodes: int = 50,
    seed: int = 2_000_000,
    n_envs: int = 8,
    progress: bool = True,
) -> list[Point]:
    """Every actor at every sweep point and shift set; the nominal point is included once per
    actor as ``kind="shift_set", quantity="nominal"``."""
    from tqdm import tqdm

    task = _one_task(actors, episodes)
    points_per_actor = 1 + sum(len(v) for v in quantities.values()) + len(shift_sets)
    bar = tqdm(
        total=len(actors) * points_per_actor * episodes,
        unit="ep",
        desc="robustness",
        disable=not progress,
    )
    out: list[Point] = []
    try:
        for actor in actors:
            runner = Runner(actor, n_envs=min(n_envs, episodes))
            try:
                bar.set_postfix_str(actor.label)

                def point(kind: str, quantity: str, value: Any, cfg: Any, r: Runner = runner):
                    wins = r.successes(cfg, episodes, seed, bar.update)
                    return Point(r.actor.label, kind, quantity, value, wins, episodes)

                out.append(point("shift_set", NOMINAL, "", None))
                for name, values in quantities.items():
                    for v in values:
                        out.append(point("sweep", name, v, shift_config(task, {name: v})))
                for name, cfg in shift_sets.items():
                    out.append(point("shift_set", name, "", cfg))
            finally:
                runner.close()
    finally:
        bar.close()
    return out


# ------------------------------------------------------------------------------------ boundaries
@dataclasses.dataclass
class Boundaries:
    """What a boundary audit probes: ADR settings (quantities and thresholds), the ranges, and
    the base randomization that supplies everything ADR does not manage."""

    source: str
    settings: Any  # manip_rl.adr.AdrSettings
    ranges: dict[str, list[float]]
    base: RandomizationConfig | None


def load_boundaries(spec: str, task: str) -> Boundaries:
    """``--boundaries``: an ADR run directory (its newest saved ranges, its settings and its base
    randomization), or a randomization config, ``default`` or a YAML path (its hand-set ranges,
    judged with the default ADR thresholds)."""
    import json

    import yaml

    from manip_rl import adr

    where = f"--boundaries {spec}"
    if os.path.isdir(spec):
        sp = os.path.join(spec, adr.ADR_DIR, adr.SETTINGS_FILE)
        if not os.path.isfile(sp):
            raise RobustnessError(
                f"{where}: not an ADR run (no {adr.ADR_DIR}/{adr.SETTINGS_FILE}); give an ADR "
                f"run directory, 'default', or a randomization YAML"
            )
        ranges = adr.read_ranges(spec)
        if ranges is None:
            raise RobustnessError(
                f"{where}: the ADR run has saved no ranges yet ({adr.ADR_DIR}/"
                f"{adr.RANGES_FILE} is written with its first checkpoint)"
            )
        with open(os.path.join(spec, "config.yaml")) as f:
            cfg = yaml.safe_load(f)
        run_task = adr.task_of_config(cfg)
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

    from manip_rl import adr

    task = _one_task(actors, episodes)
    state = adr.AdrState(boundaries.settings, boundaries.ranges)
    probes = [
        b for b in state.boundaries
        if abs(state.value(b) - boundaries.settings.param(b.split(":")[0]).nominal) > 1e-9
    ]  # fmt: skip
    if not probes:
        raise RobustnessError(
            f"--boundaries {boundaries.source}: every range is the nominal point; nothing to probe"
        )
    noise_ref = adr.default_noise(task)
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


def boundary_markdown(points: Sequence[Point], boundaries: Boundaries) -> str:
    """One row per boundary: its value and each policy's success with ADR's verdict."""
    s = boundaries.settings
    policies = list(dict.fromkeys(p.policy for p in points))
    cell = {(p.policy, p.quantity): p for p in points}
    lines = [
        f"Success at each end of the ranges of {boundaries.source} (that quantity pinned, the "
        f"others drawn from their ranges), {points[0].episodes} episodes a point, 95% Wilson "
        f"interval, and what ADR's rule would do (widen >= {s.success_high:g}, narrow <= "
        f"{s.success_low:g}, keep between).",
        "",
        "| boundary | value | " + " | ".join(policies) + " |",
        "|---|---" + "|---" * len(policies) + "|",
    ]
    for q in dict.fromkeys(p.quantity for p in points):
        row = []
        for pol in policies:
            p = cell.get((pol, q))
            if p is None:
                row.append("–")
                continue
            lo, hi = p.interval
            row.append(f"{p.success:.0%} ({lo:.0%}–{hi:.0%}) {verdict(p.success, s)}")
        value = next(p.value for p in points if p.quantity == q)
        lines.append(f"| {q} | {value:g} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_boundaries(points: Sequence[Point], boundaries: Boundaries, path: str) -> None:
    """Horizontal bars: success at each boundary per policy, over ADR's three zones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = boundaries.settings
    names = list(dict.fromkeys(p.quantity for p in points))
    policies = list(dict.fromkeys(p.policy for p in points))
    value = {p.quantity: p.value for p in points}
    rows = len(names) * max(1, len(policies))
    fig, ax = plt.subplots(figsize=(8, 1.8 + 0.2 * rows))
    ax.axvspan(0, s.success_low, color="#f4cccc", label=f"narrow (<= {s.success_low:g})")
    ax.axvspan(s.success_high, 1.0, color="#d9ead3", label=f"widen (>= {s.success_high:g})")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    height = 0.8 / max(1, len(policies))
    for k, pol in enumerate(policies):
        pts = {p.quantity: p for p in points if p.policy == pol}
        y = np.arange(len(names)) + k * height
        succ = [pts[n].success if n in pts else np.nan for n in names]
        err = np.array([[pts[n].success - pts[n].interval[0], pts[n].interval[1] - pts[n].success]
                        if n in pts else [0, 0] for n in names]).T  # fmt: skip
        ax.barh(y, succ, height, xerr=np.clip(err, 0, None), capsize=2,
                color=colors[k % len(colors)], label=pol)  # fmt: skip
    ax.set_yticks(np.arange(len(names)) + 0.4 - height / 2,
                  [f"{n.replace(':', ' ')} = {value[n]:g}" for n in names])  # fmt: skip
    ax.set_ylim(len(names) - height / 2 - 0.1, -height / 2 - 0.1)  # top to bottom
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("success at the boundary (others drawn from their ranges)")
    ax.set_title(f"Boundary audit of {os.path.basename(os.path.normpath(boundaries.source))} "
                 f"({points[0].episodes} episodes a point, 95% intervals)", fontsize=10)  # fmt: skip
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, frameon=False, fontsize=8)
    legend_rows = (len(labels) + 2) // 3
    fig.tight_layout(rect=(0, (0.2 + 0.22 * legend_rows) / fig.get_figheight(), 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# ------------------------------------------------------------------------------------ reports
def write_csv(points: Sequence[Point], path: str) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(p.row() for p in points)
    atomic_write_text(path, buf.getvalue())


def markdown(points: Sequence[Point]) -> str:
    """Two tables: success per sweep point, and per shift set, one column per policy."""
    policies = list(dict.fromkeys(p.policy for p in points))
    cell = {(p.policy, p.kind, p.quantity, str(p.value)): p for p in points}

    def fmt(p: Point | None) -> str:
        if p is None:
            return "–"
        lo, hi = p.interval
        return f"{p.success:.0%} ({lo:.0%}–{hi:.0%})"

    head = "| " + " | ".join(policies) + " |"
    sep = "|---" * len(policies) + "|"
    lines = [f"Success rate (95% Wilson interval), {points[0].episodes} episodes a point.", ""]
    keys = list(dict.fromkeys((p.quantity, str(p.value)) for p in points if p.kind == "sweep"))
    if keys:
        lines += ["| quantity | value " + head, "|---|---" + sep]
        for q, v in keys:
            row = [fmt(cell.get((pol, "sweep", q, v))) for pol in policies]
            lines.append(f"| {q} | {v} | " + " | ".join(row) + " |")
        lines.append("")
    sets = list(dict.fromkeys(p.quantity for p in points if p.kind == "shift_set"))
    lines += ["| shift set " + head, "|---" + sep]
    for s in sets:
        row = [fmt(cell.get((pol, "shift_set", s, ""))) for pol in policies]
        lines.append(f"| {s} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(points: Sequence[Point], path: str, task: str | None = None) -> None:
    """One panel per swept quantity plus one for the shift sets; lines per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    quantities = list(dict.fromkeys(p.quantity for p in points if p.kind == "sweep"))
    policies = list(dict.fromkeys(p.policy for p in points))
    n = len(quantities) + 1
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, q in zip(axes.flat, quantities, strict=False):
        spec = QUANTITIES[q]
        if task is not None:
            rng = training_range(task, q)
            if rng is not None:
                ax.axvspan(*rng, color="0.9", label="training range (default)")
        for k, pol in enumerate(policies):
            pts = sorted((p for p in points if p.policy == pol and p.quantity == q),
                         key=lambda p: float(p.value))  # fmt: skip
            if not pts:
                continue
            x = np.array([float(p.value) for p in pts])
            lo, hi = np.array([p.interval for p in pts]).T
            c = colors[k % len(colors)]
            ax.plot(x, [p.success for p in pts], "o-", color=c, label=pol)
            ax.fill_between(x, lo, hi, color=c, alpha=0.15)
        ax.axvline(spec.nominal, color="0.5", ls=":", lw=1)
        if spec.log_x:
            ax.set_xscale("log")
            ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ticks = sorted({float(p.value) for p in points if p.quantity == q})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlabel(spec.label)
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel("success")
        ax.grid(alpha=0.3)
    ax = axes.flat[len(quantities)]
    sets = list(dict.fromkeys(p.quantity for p in points if p.kind == "shift_set"))
    width = 0.8 / max(1, len(policies))
    for k, pol in enumerate(policies):
        vals = [next((p for p in points if p.policy == pol and p.kind == "shift_set"
                      and p.quantity == s), None) for s in sets]  # fmt: skip
        x = np.arange(len(sets)) + k * width
        ok = [p for p in vals if p is not None]
        succ = [p.success if p else np.nan for p in vals]
        err = np.array([[p.success - p.interval[0], p.interval[1] - p.success] if p else [0, 0]
                        for p in vals]).T  # fmt: skip
        err = np.clip(err, 0.0, None)  # a 100% point's upper end equals it up to rounding
        ax.bar(x, succ, width, yerr=err if ok else None, capsize=2,
               color=colors[k % len(colors)], label=pol)  # fmt: skip
    ax.set_xticks(np.arange(len(sets)) + 0.4 - width / 2, sets, rotation=35, ha="right")
    ax.set_ylim(0, 1.03)
    ax.set_ylabel("success")
    ax.set_title("shift sets (held-out set by default)", fontsize=9)
    for extra in list(axes.flat)[n:]:
        extra.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(5, len(labels)), frameon=False)
    fig.suptitle(
        f"Success under shifted dynamics and sensing ({points[0].episodes} episodes a point, "
        f"95% intervals)"
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_report(points: Sequence[Point], out: str, task: str) -> str:
    """``OUT/robustness.{csv,md,png}`` of a sweep; returns the markdown tables."""
    os.makedirs(out, exist_ok=True)
    write_csv(points, os.path.join(out, "robustness.csv"))
    table = markdown(points)
    atomic_write_text(os.path.join(out, "robustness.md"), table)
    plot(points, os.path.join(out, "robustness.png"), task)
    return table


def write_boundary_report(points: Sequence[Point], boundaries: Boundaries, out: str) -> str:
    """``OUT/boundaries.{csv,md,png}`` of a boundary audit; returns the markdown table."""
    os.makedirs(out, exist_ok=True)
    write_csv(points, os.path.join(out, "boundaries.csv"))
    table = boundary_markdown(points, boundaries)
    atomic_write_text(os.path.join(out, "boundaries.md"), table)
    plot_boundaries(points, boundaries, os.path.join(out, "boundaries.png"))
    return table


# ------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "policies",
        nargs="+",
        metavar="POLICY",
        help="policy files (manip-rl export), run directories, or scripted:ENV_ID",
    )
    p.add_argument(
        "--episodes", type=int, default=50, help="episodes per point and policy (default 50)"
    )
    p.add_argument(
        "--quantities",
        default=None,
        help=f"comma-separated subset of: {', '.join(QUANTITIES)} (default all); '' for none",
    )
    p.add_argument(
        "--values",
        action="append",
        default=[],
        metavar="QUANTITY=V1,V2,...",
        help="replace a quantity's sweep values, e.g. mass_scale=0.5,1,2; repeatable",
    )
    p.add_argument(
        "--shift-sets",
        nargs="*",
        default=None,
        metavar="YAML|DIR",
        help="randomization YAML files or directories of them, each one combined "
        "shift (default: the held-out set, manip_rl/configs/heldout); "
        "give the flag alone for none",
    )
    p.add_argument(
        "--model",
        choices=("auto", "best", "final", "latest"),
        default="auto",
        help="which model of a run directory (auto: best, else final, else latest)",
    )
    p.add_argument(
        "--boundaries",
        default=None,
        metavar="RANGES",
        help="instead of the sweep: ADR's test at each end of some ranges (that quantity "
        "pinned, the others drawn from their ranges), with what ADR's rule would do; RANGES is "
        "an ADR run directory, 'default' (the hand-set training ranges) or a randomization YAML",
    )
    p.add_argument("--out", default="robustness", help="output directory (default robustness/)")
    p.add_argument("--seed", type=int, default=2_000_000, help="seed of the first episode")
    p.add_argument("--n-envs", type=int, default=8, help="environments stepped together")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")  # fmt: skip


def parse_quantities(names: str, values: Sequence[str]) -> dict[str, tuple[float, ...]]:
    chosen = [n.strip() for n in names.split(",") if n.strip()]
    for n in chosen:
        if n not in QUANTITIES:
            raise RobustnessError(
                f"--quantities: unknown quantity {n!r}; known: {', '.join(QUANTITIES)}"
            )
    out = {n: QUANTITIES[n].values for n in chosen}
    for item in values:
        if "=" not in item:
            raise RobustnessError(
                f"--values {item!r}: write QUANTITY=V1,V2,..., e.g. mass_scale=1,2"
            )
        name, raw = item.split("=", 1)
        name = name.strip()
        if name not in QUANTITIES:
            raise RobustnessError(f"--values {item!r}: unknown quantity {name!r}")
        try:
            out[name] = tuple(float(v) for v in raw.split(",") if v.strip())
        except ValueError:
            raise RobustnessError(f"--values {item!r}: values must be numbers") from None
        if not out[name]:
            raise RobustnessError(f"--values {item!r}: no values given")
    return out


def _load_actors(args: argparse.Namespace, tmp: str) -> list[Actor]:
    which = None if args.model == "auto" else args.model
    actors = [load_actor(p, tmp, which) for p in args.policies]
    labels = [a.label for a in actors]
    for i, a in enumerate(actors):  # two files called policy.pt stay two lines
        if labels.count(a.label) > 1:
            a.label = f"{a.label}#{i + 1}"
    return actors


def run_boundaries(args: argparse.Namespace) -> int:
    try:
        given = [f for f, v in (("--quantities", args.quantities), ("--values", args.values or None),
                                ("--shift-sets", args.shift_sets)) if v is not None]  # fmt: skip
        if given:
            raise RobustnessError(
                f"--boundaries runs the boundary audit alone; drop {', '.join(given)} (run the "
                f"sweep as a separate command)"
            )
        if args.episodes < 1:
            raise RobustnessError("--episodes must be at least 1")
        with tempfile.TemporaryDirectory() as tmp:
            actors = _load_actors(args, tmp)
            b = load_boundaries(args.boundaries, actors[0].task)
            points = boundary_audit(actors, b, args.episodes, args.seed, args.n_envs,
                                    progress=not args.no_progress)  # fmt: skip
    except RobustnessError as e:
        raise SystemExit(f"manip-rl robustness: {e}") from None
    print(write_boundary_report(points, b, args.out))
    print(f"wrote {args.out}/boundaries.csv, boundaries.md, boundaries.png")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.boundaries is not None:
        return run_boundaries(args)
    try:
        names = ",".join(QUANTITIES) if args.quantities is None else args.quantities
        quantities = parse_quantities(names, args.values)
        if args.episodes < 1:
            raise RobustnessError("--episodes must be at least 1")
        with tempfile.TemporaryDirectory() as tmp:
            actors = _load_actors(args, tmp)
            task = actors[0].task
            paths = [HELDOUT_DIR] if args.shift_sets is None else args.shift_sets
            sets = load_shift_sets(paths, task)
            points = sweep(actors, quantities, sets, args.episodes, args.seed, args.n_envs,
                           progress=not args.no_progress)  # fmt: skip
    except RobustnessError as e:
        raise SystemExit(f"manip-rl robustness: {e}") from None
    print(write_report(points, args.out, task))
    print(f"wrote {args.out}/robustness.csv, robustness.md, robustness.png")
    return 0
