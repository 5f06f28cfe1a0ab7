"""``manip-rl export``: write a run's policy file (and ``--verify`` it), or convert a
TorchScript policy file to ONNX."""

from __future__ import annotations

import argparse
import os
import sys

from manip_rl.export.build import ExportError, convert_policy_file, export_policy, source_from_run
from manip_rl.export.metadata import PolicyFileError
from manip_rl.export.policy_file import FORMATS
from manip_rl.export.verification import verify


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run",
        help="run directory written by `manip-rl train`; or a TorchScript policy file (.pt) to "
        "convert with --format onnx (same metadata, parity checked)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="policy file to write (default: RUN/policy.pt, or RUN/policy.onnx)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="torchscript",
        help="torchscript (the robot-side format, loads with torch + numpy) or onnx",
    )
    p.add_argument(
        "--which",
        choices=("best", "final", "latest"),
        default=None,
        help="which saved model (default: best, else final, else latest)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="check parity with SB3, closed-loop success and SB3-free loading",
    )
    p.add_argument("--episodes", type=int, default=50, help="closed-loop episodes per policy")
    p.add_argument("--samples", type=int, default=10_000, help="parity observations")


def _convert_command(args: argparse.Namespace) -> int:
    if args.format != "onnx":
        print(
            f"manip-rl export: {args.run!r} is a policy file; a file converts to ONNX only: add "
            "--format onnx (or give a run directory)",
            file=sys.stderr,
        )
        return 2
    out = args.out or os.path.splitext(args.run)[0] + ".onnx"
    try:
        report = convert_policy_file(args.run, out, samples=args.samples)
    except (PolicyFileError, ExportError) as e:
        print(f"manip-rl export: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {out} (onnx) from {args.run}: parity PASS, max |onnx - torchscript| = "
        f"{report['max_abs_diff']:.2e} over {report['n']} observations (tolerance "
        f"{report['tolerance']:g})"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from manip_rl.policies.rundir import RunError

    if args.episodes < 0 or args.samples < 1:
        print("manip-rl export: --episodes must be >= 0 and --samples >= 1", file=sys.stderr)
        return 2

    if os.path.isfile(args.run):
        return _convert_command(args)
    out = args.out or os.path.join(
        args.run, "policy.onnx" if args.format == "onnx" else "policy.pt"
    )
    try:
        source = source_from_run(args.run, args.which)
        exported = export_policy(source, out, fmt=args.format)
    except (RunError, ExportError) as e:
        print(f"manip-rl export: {e}", file=sys.stderr)
        return 2
    md = exported.metadata
    print(
        f"wrote {out} ({args.format}): {md['task']} {md['env_id']}, obs {md['observation']['dim']}"
        f" -> act {md['action']['dim']}, normalization "
        f"{'on' if md['normalization']['enabled'] else 'off'}, {md['provenance']['algorithm']} "
        f"@ {md['provenance']['timesteps']} steps, sha256 {md['weights_sha256'][:16]}..."
    )
    if not args.verify:
        return 0
    report = verify(out, source, args.episodes, args.samples)
    par, cl, iso = report["parity"], report["closed_loop"], report["isolated"]
    print(
        f"parity     {'PASS' if par['ok'] else 'FAIL'}  max |file - SB3| = "
        f"{par['max_abs_diff']:.2e} over {par['n']} observations (tolerance {par['tolerance']:g})"
    )
    if cl is not None:
        s, f = cl["sb3"], cl["file"]
        print(
            f"closed loop {'PASS' if cl['ok'] else 'FAIL'}  success SB3 {s['successes']}/"
            f"{s['episodes']} (95% CI {s['ci95'][0]:.0%}-{s['ci95'][1]:.0%}), file "
            f"{f['successes']}/{f['episodes']} (95% CI {f['ci95'][0]:.0%}-{f['ci95'][1]:.0%}), "
            f"randomization: {cl['randomization']}"
        )
    print(
        f"isolated   {'PASS' if iso['ok'] else 'FAIL'}  loads and acts without "
        f"stable_baselines3, gymnasium, mujoco" + ("" if iso["ok"] else f": {iso.get('error')}")
    )
    return 0 if report["ok"] else 1
