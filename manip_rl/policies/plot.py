"""``manip-rl plot RUN...``: learning curves (success and return against environment steps and
wall-clock) of one or more runs on one PNG."""

from __future__ import annotations

import argparse
import csv
import os

import numpy as np


def _read_csv(path: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    out = {}
    for key in rows[0]:
        vals = []
        for r in rows:
            try:
                vals.append(float(r[key]))
            except (TypeError, ValueError):
                vals.append(np.nan)
        out[key] = np.asarray(vals)
    return out


def load_curves(run_path: str) -> dict[str, dict[str, np.ndarray]]:
    """``{"eval": evaluations.csv columns, "train": progress.csv columns}`` of a run."""
    return {
        "eval": _read_csv(os.path.join(run_path, "eval", "evaluations.csv")),
        "train": _read_csv(os.path.join(run_path, "logs", "progress.csv")),
    }


def plot_runs(
    runs: list[str], out: str, labels: list[str] | None = None, title: str | None = None
) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from manip_rl.fileio import atomic_path

    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    (ax_ss, ax_sw), (ax_rs, ax_rw) = axes
    for i, path in enumerate(runs):
        label = labels[i] if labels else os.path.basename(os.path.normpath(path))
        c = load_curves(path)
        color = f"C{i % 10}"
        ev, tr = c["eval"], c["train"]
        if ev:
            for ax, x in ((ax_ss, ev["timesteps"]), (ax_sw, ev["wall_s"] / 60)):
                ax.plot(x, ev["success_randomized"], color=color, label=f"{label} randomized")
                ax.plot(x, ev["success_nominal"], color=color, ls="--", alpha=0.6,
                        label=f"{label} nominal")  # fmt: skip
                ax.fill_between(x, ev["ci_randomized_low"], ev["ci_randomized_high"],
                                color=color, alpha=0.12)  # fmt: skip
        if tr and "rollout/ep_rew_mean" in tr:
            ok = ~np.isnan(tr["rollout/ep_rew_mean"])
            ax_rs.plot(tr["time/total_timesteps"][ok], tr["rollout/ep_rew_mean"][ok], color=color,
                       label=label)  # fmt: skip
            if "time/wall_s" in tr:
                ax_rw.plot(tr["time/wall_s"][ok] / 60, tr["rollout/ep_rew_mean"][ok], color=color,
                           label=label)  # fmt: skip
    ax_ss.set(xlabel="environment steps", ylabel="success rate (eval)", ylim=(-0.02, 1.02))
    ax_sw.set(xlabel="wall-clock (min)", ylabel="success rate (eval)", ylim=(-0.02, 1.02))
    ax_rs.set(xlabel="environment steps", ylabel="episode return (training)")
    ax_rw.set(xlabel="wall-clock (min)", ylabel="episode return (training)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    ax_ss.legend(fontsize=7, loc="lower right")
    ax_rs.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "runs", nargs="+", metavar="RUN", help="run directories made by `manip-rl train`"
    )
    p.add_argument("--out", default="learning_curves.png", help="PNG to write")
    p.add_argument("--labels", nargs="*", help="one label per run (default: directory names)")
    p.add_argument("--title", default=None)


def run(args: argparse.Namespace) -> int:
    if not args.out.lower().endswith(".png"):
        raise SystemExit(f"--out {args.out!r}: write a .png")
    if args.labels and len(args.labels) != len(args.runs):
        raise SystemExit(f"--labels: {len(args.labels)} labels for {len(args.runs)} runs")
    for r in args.runs:
        if not os.path.isfile(os.path.join(r, "config.yaml")):
            raise SystemExit(f"manip-rl plot: {r!r} is not a run directory (no config.yaml)")
        if not load_curves(r)["eval"] and not load_curves(r)["train"]:
            raise SystemExit(f"manip-rl plot: {r!r} has no logs yet")
    print(plot_runs(args.runs, args.out, args.labels, args.title))
    return 0
