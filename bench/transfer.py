"""Transfer evidence: a nominal-only, a hand-randomized and an ADR Push policy, trained with the
same budget and seed, judged on the held-out dynamics set and on the robustness sweep.

Figures (issue 6), each computed here from the runs this script trains or is given:

1. On the held-out set (manip_rl/configs/heldout, never used by a training config) the
   randomized policy keeps >= 90% of its nominal success; the nominal-only policy drops >= 30
   points.
2. Randomization costs <= 2x the training steps to the same nominal success: the steps each run
   needed (from its periodic evaluations, ``eval/evaluations.csv``) to first reach a target
   nominal success, the target being min(0.8, 0.9 x the nominal-only run's best).
3. ADR ends with ranges wider than the hand-set defaults (configs/randomization/<task>.yaml),
   with equal or better held-out success than the hand-randomized policy.

    python bench/transfer.py            # hours on a quiet machine: 3 x the task's default budget
    python bench/transfer.py --quick    # a few minutes: tiny budgets, a smoke check of the chain
    python bench/transfer.py --nominal RUN --randomized RUN --adr RUN   # judge existing runs
    python bench/transfer.py --adr-overhead   # ADR wrapper's env steps/s against the plain env
    python bench/transfer.py ... --audit      # also ADR's test at the ends of the hand-set ranges

Runs go to ``--runs-dir`` (default runs/transfer/<task>_<arm>); an interrupted training resumes
and a finished one is reused, so the script can be run again after a kill. The report
(``report.md``, ``transfer.json``, ``robustness.{csv,md,png}``, ``adr_ranges.png``) goes to
``--out``. On this shared machine every figure is preliminary; the numbers compare policies
measured in the same run, on the same seeded episodes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
import tempfile
import time

import numpy as np

from manip_rl.cli import main as cli_main
from manip_rl.envs.randomization import load_config
from manip_rl.fileio import atomic_write_text
from manip_rl.stats import wilson_interval
from manip_rl.transfer import adr, adr_env, adr_plot, adr_run
from manip_rl.transfer.actors import ScriptedActor, load_actor
from manip_rl.transfer.boundaries import boundary_audit, load_boundaries
from manip_rl.transfer.reports import write_boundary_report, write_report
from manip_rl.transfer.shifts import NOMINAL, QUANTITIES, heldout_sets
from manip_rl.transfer.sweep import Point, sweep

ARMS = ("nominal", "randomized", "adr")
TARGETS = {"keep_ratio": 0.90, "nominal_drop": 0.30, "step_cost": 2.0}
QUICK_VALUES = {  # nominal and one shifted value per quantity
    "mass_scale": (1.0, 2.0),
    "friction_scale": (1.0, 0.5),
    "damping_scale": (1.0, 4.0),
    "actuator_gain_scale": (1.0, 0.6),
    "action_latency": (0, 2),
    "observation_latency": (0, 2),
    "observation_noise": (0.0, 3.0),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="PandaPush", help="PandaPush (the issue's task) or PandaReach")
    p.add_argument(
        "--timesteps",
        type=int,
        help="training budget of each run (default: the task's in tasks.yaml)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs-dir", default=os.path.join("runs", "transfer"))
    p.add_argument("--out", default=os.path.join("runs", "transfer", "report"))
    for arm in ARMS:
        p.add_argument(
            f"--{arm}",
            metavar="RUN|POLICY",
            help=f"use this run directory or policy file as the {arm} policy",
        )
    p.add_argument(
        "--episodes",
        type=int,
        default=100,
        help="episodes per sweep point and held-out set (default 100)",
    )
    p.add_argument(
        "--arms",
        nargs="+",
        choices=ARMS,
        default=list(ARMS),
        help="which policies to train and judge (default all three; nominal and randomized are "
        "needed for the first two figures, adr for the third)",
    )
    p.add_argument("--no-sweep", action="store_true", help="held-out set and nominal only")
    p.add_argument("--no-scripted", action="store_true",
                   help="leave out the scripted controller (a reference line: it shows each "
                        "shift is still solvable by a controller that knows the task)")  # fmt: skip
    p.add_argument(
        "--audit",
        action="store_true",
        help="also run ADR's test at each end of the hand-set ranges for every policy "
        "(manip-rl robustness --boundaries default): boundaries.{csv,md,png}",
    )
    p.add_argument(
        "--adr-overhead",
        action="store_true",
        help="only measure the ADR wrapper's cost in env steps/s against the plain randomized "
        "env (interleaved repeats in one process), then exit",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny budgets (2000 steps, 4 episodes a point): checks the chain runs",
    )
    return p.parse_args(argv)  # fmt: skip


# ------------------------------------------------------------------------------------ training
def train_arm(arm: str, args: argparse.Namespace) -> str:
    """Train (or resume, or reuse) one arm's run; returns its directory."""
    path = os.path.join(args.runs_dir, f"{args.task}_{arm}_s{args.seed}")
    if os.path.isfile(os.path.join(path, "final", "meta.json")):
        print(f"[{arm}] reusing finished run {path}")
        return path
    if os.path.isfile(os.path.join(path, "checkpoints", "latest.json")):
        print(f"[{arm}] resuming {path}")
        cli_main(["train", "--resume", path, "--no-progress"])
        return path
    rand = "none" if arm == "nominal" else "default"
    cmd = ["train", "--task", args.task, "--seed", str(args.seed), "--run-dir", path,
           "--randomization", rand, "--no-progress"]  # fmt: skip
    if args.timesteps:
        cmd += ["--timesteps", str(args.timesteps)]
    if arm == "adr":
        cmd += ["--dr", args.adr_settings]
    if args.quick:
        cmd += ["--n-envs", "2", "--vec-env", "dummy", "--set", "eval.freq=500",
                "--set", "eval.episodes=4", "--set", "checkpoint_freq=1000",
                "--set", "log_interval=1"]  # fmt: skip
    print(f"[{arm}] manip-rl {' '.join(cmd)}")
    t0 = time.monotonic()
    cli_main(cmd)
    print(f"[{arm}] trained in {time.monotonic() - t0:.0f} s")
    return path


def steps_to(path: str, target: float) -> int | None:
    """First evaluated step count at which the run's nominal success reached ``target``."""
    p = os.path.join(path, "eval", "evaluations.csv")
    if not os.path.isfile(p):
        return None
    with open(p, newline="") as f:
        for row in csv.DictReader(f):
            if float(row["success_nominal"]) >= target:
                return int(row["timesteps"])
    return None


def best_nominal(path: str) -> float | None:
    p = os.path.join(path, "eval", "evaluations.csv")
    if not os.path.isfile(p):
        return None
    with open(p, newline="") as f:
        vals = [float(r["success_nominal"]) for r in csv.DictReader(f)]
    return max(vals) if vals else None


# ------------------------------------------------------------------------------------ figures
def pooled(points: list[Point], policy: str, names: list[str]) -> tuple[int, int]:
    sel = [
        p for p in points if p.policy == policy and p.kind == "shift_set" and p.quantity in names
    ]
    return sum(p.successes for p in sel), sum(p.episodes for p in sel)


def log_widths(ranges: dict[str, list[float]], keys: list[str]) -> dict[str, float]:
    return {k: math.log(ranges[k][1] / ranges[k][0]) for k in keys if k in ranges}


def adr_overhead(task: str, steps: int = 3000, repeats: int = 5) -> dict:
    """Env steps/s of the randomized env with and without :class:`adr_env.AdrWrapper` (ranges as
    wide as the hand-set defaults, a boundary every other episode), median of interleaved
    repeats."""
    import gymnasium as gym

    import manip_rl  # noqa: F401

    key = {"PandaPush": "push", "PandaReach": "reach"}[task]
    base = load_config("default", key)
    params = {k: {"init": v} for k, v in adr.ranges_of_config(base).items()}
    settings = adr.AdrSettings.from_dict({"params": params}, key)
    env_id = f"manip_rl/{task}-v0"
    plain = gym.make(env_id, randomization="default")
    wrapped = adr_env.AdrWrapper(
        gym.make(env_id, randomization="default"), settings, base=base, seed=0
    )
    envs = {"plain": plain, "adr": wrapped}
    action = np.zeros(plain.action_space.shape, np.float32)
    rates: dict[str, list[float]] = {k: [] for k in envs}
    for _ in range(repeats):
        for name, env in envs.items():
            env.reset(seed=0)
            t0 = time.perf_counter()
            for _ in range(steps):
                _, _, term, trunc, _ = env.step(action)
                if term or trunc:
                    env.reset()
            rates[name].append(steps / (time.perf_counter() - t0))
    med = {k: float(np.median(v)) for k, v in rates.items()}
    return {"steps_per_s": med, "ratio_adr_over_plain": med["adr"] / med["plain"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.adr_overhead:
        r = adr_overhead(args.task)
        rates = r["steps_per_s"]
        print(
            f"{args.task} env steps/s: randomized {rates['plain']:.0f}, with ADR "
            f"{rates['adr']:.0f}; ratio {r['ratio_adr_over_plain']:.3f} (median of 5 "
            f"interleaved runs of 3000 steps; preliminary on a shared machine)"
        )
        return 0
    if args.quick:
        args.timesteps = args.timesteps or 2000
        args.episodes = min(args.episodes, 4)
    task_key = {"PandaPush": "push", "PandaReach": "reach"}.get(args.task)
    if task_key is None:
        raise SystemExit(f"--task {args.task!r}: use PandaPush or PandaReach")
    os.makedirs(args.out, exist_ok=True)
    # Quick runs are too short for ADR's default 20-episode buffers to decide anything.
    args.adr_settings = "adr"
    if args.quick:
        args.adr_settings = os.path.join(args.out, "adr_quick.yaml")
        atomic_write_text(args.adr_settings, "buffer_size: 2\n")
    t_start = time.monotonic()

    if not {"nominal", "randomized"} <= set(args.arms):
        raise SystemExit("--arms: nominal and randomized are both needed")
    sources = {arm: getattr(args, arm) or train_arm(arm, args) for arm in args.arms}
    runs = {arm: s for arm, s in sources.items() if os.path.isdir(s)}

    heldout = heldout_sets(task_key)
    quantities = {
        q: QUICK_VALUES[q] if args.quick else spec.values
        for q, spec in QUANTITIES.items()
        if not args.no_sweep
    }
    with tempfile.TemporaryDirectory() as tmp:
        actors = []
        for arm in args.arms:
            # The final model of every run: "best" is picked on randomized success, which
            # would favour the nominal-only run's most robust moment.
            a = load_actor(sources[arm], tmp, which="final")
            a.label = arm
            actors.append(a)
        if not args.no_scripted:
            ref = ScriptedActor(f"manip_rl/{args.task}-v0")
            ref.label = "scripted"
            actors.append(ref)
        print(f"evaluating {len(actors)} policies: nominal, {len(heldout)} held-out sets, "
              f"{sum(len(v) for v in quantities.values())} sweep points, {args.episodes} "
              f"episodes each")  # fmt: skip
        points = sweep(actors, quantities, heldout, args.episodes,
                       progress=sys.stderr.isatty())  # fmt: skip
        audit = None
        if args.audit:
            hand_set = load_boundaries("default", task_key)
            print(f"auditing the hand-set ranges' ends, {args.episodes} episodes each")
            audit = boundary_audit(actors, hand_set, args.episodes,
                                   progress=sys.stderr.isatty())  # fmt: skip
            audit_md = write_boundary_report(audit, hand_set, args.out)
    write_report(points, args.out, task_key)

    names = list(heldout)
    res: dict = {"task": args.task, "episodes": args.episodes, "quick": args.quick,
                 "sources": sources, "arms": {}}  # fmt: skip
    for arm in [*args.arms, *([] if args.no_scripted else ["scripted"])]:
        nom_s, nom_n = pooled(points, arm, [NOMINAL])
        ho_s, ho_n = pooled(points, arm, names)
        res["arms"][arm] = {
            "nominal_success": nom_s / nom_n,
            "nominal_ci": wilson_interval(nom_s, nom_n),
            "heldout_success": ho_s / ho_n,
            "heldout_ci": wilson_interval(ho_s, ho_n),
            "heldout_per_set": {
                n: next(p.success for p in points if p.policy == arm and p.quantity == n)
                for n in names
            },
        }
    a = res["arms"]
    # A ratio of two zeros says nothing: n/a until the randomized policy succeeds at all.
    rn = a["randomized"]["nominal_success"]
    keep = a["randomized"]["heldout_success"] / rn if rn > 0 else None
    drop = a["nominal"]["nominal_success"] - a["nominal"]["heldout_success"]
    figures = {
        "randomized_keeps": {"value": keep, "target": f">= {TARGETS['keep_ratio']}",
                             "met": None if keep is None else keep >= TARGETS["keep_ratio"]},
        "nominal_only_drops": {"value": drop, "target": f">= {TARGETS['nominal_drop']}",
                               "met": drop >= TARGETS["nominal_drop"]},
    }  # fmt: skip

    # 2. Steps to the same nominal success.
    if "nominal" in runs and "randomized" in runs and best_nominal(runs["nominal"]):
        target = min(0.8, 0.9 * best_nominal(runs["nominal"]))
        s_nom, s_rand = steps_to(runs["nominal"], target), steps_to(runs["randomized"], target)
        s_adr = steps_to(runs["adr"], target) if "adr" in runs else None
        ratio = (s_rand / s_nom) if s_nom and s_rand else math.inf
        figures["step_cost"] = {"value": ratio, "target": f"<= {TARGETS['step_cost']}",
                                "met": ratio <= TARGETS["step_cost"], "nominal_success_target":
                                round(target, 3), "steps": {"nominal": s_nom,
                                "randomized": s_rand, "adr": s_adr}}  # fmt: skip
        if "adr" in runs:  # ADR is randomization too: its ranges start at nominal and grow
            r_adr = (s_adr / s_nom) if s_nom and s_adr else math.inf
            figures["adr_step_cost"] = {"value": r_adr, "target": f"<= {TARGETS['step_cost']}",
                                        "met": r_adr <= TARGETS["step_cost"]}  # fmt: skip
    else:
        figures["step_cost"] = {"value": None, "met": None,
                                "note": "needs both runs with periodic evaluations"}  # fmt: skip

    if "adr" in a and a["adr"]["nominal_success"] > 0:
        k_adr = a["adr"]["heldout_success"] / a["adr"]["nominal_success"]
        figures["adr_keeps"] = {"value": k_adr, "target": f">= {TARGETS['keep_ratio']}",
                                "met": k_adr >= TARGETS["keep_ratio"]}  # fmt: skip

    # 3. ADR's ranges against the hand-set defaults, and its held-out success.
    default_ranges = adr.ranges_of_config(load_config("default", task_key))
    adr_ranges = adr_run.read_ranges(runs["adr"]) if "adr" in runs else None
    if adr_ranges:
        keys = [k for k in default_ranges if k in adr.PHYSICS_PARAMS and k in adr_ranges]
        wider = [k for k in keys if adr_ranges[k][0] <= default_ranges[k][0] + 1e-9
                 and adr_ranges[k][1] >= default_ranges[k][1] - 1e-9]  # fmt: skip
        better = a["adr"]["heldout_success"] >= a["randomized"]["heldout_success"]
        # OpenAI's summary of the whole distribution's width (mean log range width, ADR's
        # quantities only), for ADR's ranges and for the hand-set ones.
        settings = adr.AdrSettings.from_dict({}, task_key)
        figures["adr_wider"] = {
            "value": f"{len(wider)}/{len(keys)} physics ranges contain the default",
            "met": len(wider) == len(keys) and better,
            "adr_log_widths": log_widths(adr_ranges, keys),
            "default_log_widths": log_widths(default_ranges, keys),
            "adr_nats_per_dimension": adr.AdrState(settings, adr_ranges).nats_per_dimension(),
            "default_nats_per_dimension": adr.AdrState(
                settings, default_ranges
            ).nats_per_dimension(),
            "latency": {k: adr_ranges.get(k) for k in ("action_latency", "observation_latency")},
            "heldout_adr_minus_randomized": a["adr"]["heldout_success"]
            - a["randomized"]["heldout_success"],
        }
        res["adr_ranges"] = adr_ranges
        adr_plot.plot_ranges(runs["adr"], os.path.join(args.out, "adr_ranges.png"))
    else:
        figures["adr_wider"] = {"value": None, "met": None,
                                "note": "the ADR policy is not an ADR run directory"}  # fmt: skip
    if audit:
        # Would ADR keep the hand-set ranges? Its test at each of their ends, per policy.
        high = hand_set.settings.success_high
        res["handset_audit"] = {
            "success_high": high,
            "table": audit_md,
            "passes": {
                pol: sum(p.success >= high for p in audit if p.policy == pol)
                for pol in dict.fromkeys(p.policy for p in audit)
            },
            "ends": len({p.quantity for p in audit}),
            "success": {f"{p.policy} {p.quantity}": p.success for p in audit},
        }
    res["figures"] = figures
    res["wall_s"] = round(time.monotonic() - t_start, 1)
    res["machine"] = f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs"
    res["command"] = "python bench/transfer.py " + " ".join(sys.argv[1:] if argv is None else argv)

    report = render(res, names)
    atomic_write_text(os.path.join(args.out, "transfer.json"),
                      json.dumps(res, indent=1, default=_json))  # fmt: skip
    atomic_write_text(os.path.join(args.out, "report.md"), report)
    print(report)
    extra = ", boundaries.csv/.md/.png" if audit else ""
    print(f"wrote {args.out}/report.md, transfer.json, robustness.csv/.md/.png, adr_ranges.png"
          f"{extra}")  # fmt: skip
    return 0


def _json(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return str(x)


def render(res: dict, names: list[str]) -> str:
    a = res["arms"]
    lines = [
        f"# Transfer evidence: {res['task']}" + (" (--quick: a smoke check, not a result)"
                                                if res["quick"] else ""),
        "",
        f"`{res['command']}` — {res['wall_s']:.0f} s on {res['machine']}; {res['episodes']} "
        f"seeded episodes per point, the same for every policy. Preliminary figures.",
        "",
        "| policy | nominal success | held-out success (pooled) | "
        + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]  # fmt: skip
    for arm in a:
        r = a[arm]
        lo, hi = r["nominal_ci"]
        hlo, hhi = r["heldout_ci"]
        per = " | ".join(f"{r['heldout_per_set'][n]:.0%}" for n in names)
        lines.append(f"| {arm} | {r['nominal_success']:.0%} ({lo:.0%}–{hi:.0%}) | "
                     f"{r['heldout_success']:.0%} ({hlo:.0%}–{hhi:.0%}) | {per} |")  # fmt: skip
    f = res["figures"]
    lines += ["", "| figure | measured | target | met |", "|---|---|---|---|"]

    def row(name: str, key: str, fmt: str) -> None:
        v = f[key].get("value")
        shown = "n/a" if v is None else (format(v, fmt) if isinstance(v, float) else str(v))
        met = {True: "yes", False: "no", None: "n/a"}[f[key].get("met")]
        lines.append(f"| {name} | {shown} | {f[key].get('target', '')} | {met} |")

    row("randomized: held-out / nominal success", "randomized_keeps", ".2f")
    row("nominal-only: nominal − held-out (points)", "nominal_only_drops", ".2f")
    row("steps to the same nominal success, randomized / nominal-only", "step_cost", ".2f")
    if "adr_keeps" in f:
        row("ADR: held-out / nominal success", "adr_keeps", ".2f")
    if "adr_step_cost" in f:
        row("steps to the same nominal success, ADR / nominal-only", "adr_step_cost", ".2f")
    row("ADR ranges wider than the defaults, held-out ≥ randomized", "adr_wider", "")
    if "steps" in f["step_cost"]:
        lines += ["", f"Steps to nominal success {f['step_cost']['nominal_success_target']}: "
                  + ", ".join(f"{k} {v}" for k, v in f["step_cost"]["steps"].items())]  # fmt: skip
    if "adr_log_widths" in f["adr_wider"]:
        w = f["adr_wider"]
        lines += ["", "| quantity | ADR log-width | default log-width |", "|---|---|---|"]
        for k, v in w["adr_log_widths"].items():
            lines.append(f"| {k} | {v:.2f} | {w['default_log_widths'][k]:.2f} |")
        lines += ["", f"Nats per dimension (all ADR quantities): ADR "
                  f"{w['adr_nats_per_dimension']:.2f}, hand-set "
                  f"{w['default_nats_per_dimension']:.2f}."]  # fmt: skip
    if "handset_audit" in res:
        h = res["handset_audit"]
        passes = ", ".join(f"{k} {v}" for k, v in h["passes"].items())
        lines += ["", "## ADR's test at the ends of the hand-set ranges (`--audit`)", "",
                  f"Ends where a policy reaches ADR's widening threshold ({h['success_high']:g}),"
                  f" of {h['ends']}: {passes}.", "", h["table"]]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
