"""Reports of sweeps and boundary audits: CSV, markdown tables and plots."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence

import numpy as np

from manip_rl.fileio import atomic_path, atomic_write_text
from manip_rl.transfer.boundaries import Boundaries, verdict
from manip_rl.transfer.shifts import QUANTITIES, training_range
from manip_rl.transfer.sweep import Point

CSV_COLUMNS = ("policy", "kind", "quantity", "value", "successes", "episodes", "success",
               "ci_low", "ci_high")  # fmt: skip


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
