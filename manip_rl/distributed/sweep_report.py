"""A sweep's results across seeds: a table (mean and 95% interval of the final success, steps to
a success level) and a plot of success against steps, from the trials' run directories."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import statistics
from typing import Any

from manip_rl.distributed.sweep_trial import RUNS_DIR, TRIAL_FILE
from manip_rl.fileio import atomic_path, atomic_write_text
from manip_rl.policies import rundir

# Student t, two-sided 95%, by degrees of freedom (1..30); beyond 30, 1.96 is close enough.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def mean_interval(xs: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): the 95% Student t interval of the mean across seeds (a single seed
    has no interval: low = high = nan)."""
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, math.nan, math.nan
    t = _T95[len(xs) - 2] if len(xs) - 1 <= len(_T95) else 1.96
    half = t * statistics.stdev(xs) / math.sqrt(len(xs))
    return m, m - half, m + half


def trials(sweep_dir: str) -> list[dict]:
    """Every trial run directory of the sweep: params, seed, evaluations."""
    root = os.path.join(sweep_dir, RUNS_DIR)
    out = []
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        path = os.path.join(root, name)
        p = os.path.join(path, TRIAL_FILE)
        if not os.path.isfile(p):
            continue
        with open(p) as f:
            info = json.load(f)
        params = dict(info["params"])
        seed = params.pop("seed", None)
        out.append(
            {
                "path": path,
                "params": params,
                "seed": seed,
                "attempts": len(info.get("attempts", [])),
                "evals": rundir.Run(path, {}).evaluations(),
            }
        )
    return out


def summarize(sweep_dir: str, metric: str, level: float) -> list[dict]:
    """One row per distinct set of params (seeds pooled): n seeds, final ``metric`` mean and
    95% interval, steps to ``level`` (mean over the seeds that reached it)."""
    groups: dict[str, list[dict]] = {}
    for t in trials(sweep_dir):
        groups.setdefault(json.dumps(t["params"], sort_keys=True), []).append(t)
    rows = []
    for key, ts in groups.items():
        finals, reach, steps = [], [], []
        for t in ts:
            if not t["evals"]:
                continue
            finals.append(float(t["evals"][-1][metric]))
            steps.append(int(t["evals"][-1]["timesteps"]))
            hit = [int(r["timesteps"]) for r in t["evals"] if float(r[metric]) >= level]
            if hit:
                reach.append(hit[0])
        m, lo, hi = mean_interval(finals) if finals else (math.nan, math.nan, math.nan)
        rows.append(
            {
                "params": json.loads(key),
                "seeds": len(ts),
                "evaluated": len(finals),
                "steps": max(steps) if steps else 0,
                "mean": m,
                "ci_low": lo,
                "ci_high": hi,
                "reached": len(reach),
                "steps_to_level": statistics.fmean(reach) if reach else math.nan,
                "restarts": sum(t["attempts"] - 1 for t in ts),
            }
        )
    return sorted(rows, key=lambda r: -r["mean"] if not math.isnan(r["mean"]) else math.inf)


def table(rows: list[dict], metric: str, level: float) -> str:
    """The summary as a Markdown table."""
    head = (f"| params | seeds | steps | {metric} mean | 95% interval | steps to "
            f"{level:g} (reached) | restarts |")  # fmt: skip
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "(base)"
        ci = (
            "n/a (1 seed)"
            if math.isnan(r["ci_low"])
            else f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
        )
        reach = "—" if not r["reached"] else f"{r['steps_to_level']:.0f}"
        lines.append(
            f"| {params} | {r['seeds']} | {r['steps']} | {r['mean']:.2f} | {ci} | "
            f"{reach} ({r['reached']}/{r['evaluated']}) | {r['restarts']} |"
        )
    return "\n".join(lines)


def write_summary(sweep_dir: str, metric: str, level: float) -> tuple[str, list[dict]]:
    """Write SWEEP/summary.md, summary.csv and success.png; return the table and its rows."""
    rows = summarize(sweep_dir, metric, level)
    text = table(rows, metric, level)
    atomic_write_text(os.path.join(sweep_dir, "summary.md"), text + "\n")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ["params", "seeds", "evaluated", "steps", "mean", "ci_low", "ci_high", "reached",
            "steps_to_level", "restarts"]  # fmt: skip
    w.writerow(cols)
    for r in rows:
        w.writerow([json.dumps(r["params"]) if c == "params" else r[c] for c in cols])
    atomic_write_text(os.path.join(sweep_dir, "summary.csv"), buf.getvalue())
    plot(sweep_dir, metric, level)
    return text, rows


def plot(sweep_dir: str, metric: str, level: float) -> str:
    """``metric`` against steps: each seed thin, the mean over seeds bold, one colour per set of
    params; SWEEP/success.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[dict]] = {}
    for t in trials(sweep_dir):
        label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in t["params"].items()) or "base"
        groups.setdefault(label, []).append(t)
    for i, (label, ts) in enumerate(groups.items()):
        colour = f"C{i % 10}"
        curves: dict[int, list[float]] = {}
        for t in ts:
            xs = [int(r["timesteps"]) for r in t["evals"]]
            ys = [float(r[metric]) for r in t["evals"]]
            ax.plot(xs, ys, color=colour, alpha=0.3, lw=1)
            for x, y in zip(xs, ys, strict=True):
                curves.setdefault(x, []).append(y)
        if curves:
            xs = sorted(curves)
            ax.plot(xs, [statistics.fmean(curves[x]) for x in xs], color=colour, lw=2,
                    label=f"{label} ({len(ts)} seeds)")  # fmt: skip
    ax.axhline(level, color="grey", ls=":", lw=1)
    ax.set_xlabel("environment steps")
    ax.set_ylabel(metric)
    ax.set_ylim(-0.02, 1.02) if metric.startswith("success") else None
    ax.grid(alpha=0.3)
    if groups:
        ax.legend(fontsize=8)
    ax.set_title(os.path.basename(os.path.abspath(sweep_dir)))
    out = os.path.join(sweep_dir, "success.png")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return out


def status_line(trials_state: list[tuple[str, str, dict[str, Any]]], elapsed: float) -> str:
    """``[sweep 1m05s] 1 running, 1 done | a1_00000 RUNNING 4096 steps success 0.40 | ...``"""
    counts: dict[str, int] = {}
    for _, state, _ in trials_state:
        counts[state] = counts.get(state, 0) + 1
    parts = [f"{n} {s.lower()}" for s, n in sorted(counts.items())]
    head = f"[sweep {int(elapsed // 60)}m{int(elapsed % 60):02d}s] " + ", ".join(parts)
    lines = [head]
    for tid, state, last in trials_state:
        steps = last.get("timesteps", 0)
        succ = last.get("success_randomized")
        lines.append(
            f"  {tid} {state:<10} {steps:>9} steps"
            + (f"  success {succ:.2f}" if isinstance(succ, float) else "")
        )
    return "\n".join(lines)
