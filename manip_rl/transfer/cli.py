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
import tempfile
from collections.abc import Sequence

from manip_rl.transfer.actors import Actor, load_actor
from manip_rl.transfer.boundaries import boundary_audit, load_boundaries
from manip_rl.transfer.reports import write_boundary_report, write_report
from manip_rl.transfer.shifts import HELDOUT_DIR, QUANTITIES, RobustnessError, load_shift_sets
from manip_rl.transfer.sweep import sweep


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
