"""The plot of a run's ADR ranges over training."""

from __future__ import annotations

import csv
import os

from manip_rl.envs.randomization import load_config
from manip_rl.transfer.adr import AdrConfigError
from manip_rl.transfer.adr_run import ADR_DIR, EVENTS_FILE, task_of_config


def plot_ranges(run_path: str, out_png: str) -> None:
    """The evolution of a run's ADR ranges (``RUN/adr/ranges.csv``), one panel per quantity,
    with the task's hand-set default range shaded for comparison."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from manip_rl.fileio import atomic_path
    from manip_rl.policies.rundir import load_run

    events_path = os.path.join(run_path, ADR_DIR, EVENTS_FILE)
    if not os.path.isfile(events_path):
        raise AdrConfigError(f"{run_path}: no {ADR_DIR}/{EVENTS_FILE}; is it a --dr adr run?")
    with open(events_path, newline="") as f:
        rows = list(csv.DictReader(f))
    task = task_of_config(load_run(run_path).config)
    default = load_config("default", task)
    series: dict[str, list[tuple[int, float, float]]] = {}
    for r in rows:
        name = r["boundary"].split(":")[0]
        series.setdefault(name, []).append((int(r["timesteps"]), float(r["low"]), float(r["high"])))
    end = max(int(r["timesteps"]) for r in rows) if rows else 0
    names = list(series)
    cols = min(5, max(1, len(names)))
    nrows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 2.6 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        pts = series[name] + [(end, *series[name][-1][1:])]
        t = [p[0] for p in pts]
        ax.step(t, [p[1] for p in pts], where="post", color="C0")
        ax.step(t, [p[2] for p in pts], where="post", color="C0")
        ax.fill_between(t, [p[1] for p in pts], [p[2] for p in pts], step="post", alpha=0.25)
        if default is not None:
            if name in default.physics and default.physics[name].dist != "normal":
                ax.axhspan(*default.physics[name].bounds(), color="0.85", zorder=0)
            elif name in ("action_latency", "observation_latency"):
                ax.axhspan(*getattr(default, name), color="0.85", zorder=0)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("timesteps", fontsize=8)
        ax.tick_params(labelsize=7)
    for extra in list(axes.flat)[len(names) :]:
        extra.set_visible(False)
    fig.suptitle(f"ADR ranges of {os.path.basename(os.path.normpath(run_path))} "
                 f"(grey: hand-set default range)")  # fmt: skip
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
