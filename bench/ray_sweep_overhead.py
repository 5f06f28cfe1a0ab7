"""The fixed cost of ``manip-rl sweep`` per trial, on an embedded local Ray.

Run inside a loopback-only network namespace:

    unshare -n sh -c 'ip link set lo up; PYTHONPATH=$PWD .venv/bin/python bench/ray_sweep_overhead.py'

Runs ``--trials`` tiny PandaReach trials one at a time (``--max-concurrent 1``) and splits the
sweep's wall time into Ray's start-up, the trials' own training time (each run's
``final/meta.json`` wall_s, which the run measures from its first step to its last) and the rest:
the fixed overhead per trial (actor start, imports, env construction, first evaluation set-up,
reporting, Tune's bookkeeping). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time


def main() -> None:
    from manip_rl.distributed.netns import require_loopback_only

    require_loopback_only("bench/ray_sweep_overhead.py")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--timesteps", type=int, default=200)
    args = p.parse_args()

    import ray

    from manip_rl.distributed import sweep, sweep_report
    from manip_rl.policies import rundir

    load0 = os.getloadavg()
    t = time.perf_counter()
    ray.init(address="local", include_dashboard=False, configure_logging=False)
    ray_start_s = time.perf_counter() - t
    out_dir = tempfile.mkdtemp(prefix="sweep_bench")
    argv = [
        "--task", "PandaReach", "--timesteps", str(args.timesteps), "--n-seeds", str(args.trials),
        "--max-concurrent", "1", "--no-progress", "--sweep-dir", os.path.join(out_dir, "s"),
        "--set", "n_envs=2", "--set", "vec_env=dummy", "--set", f"checkpoint_freq={args.timesteps}",
        "--set", f"eval.freq={args.timesteps}", "--set", "eval.episodes=2",
        "--set", "hyperparams.n_steps=50", "--set", "hyperparams.batch_size=50",
        "--set", "policy_kwargs.net_arch=[16,16]",
    ]  # fmt: skip
    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    t = time.perf_counter()
    rc = sweep.run(parser.parse_args(argv))
    sweep_s = time.perf_counter() - t
    ray.shutdown()
    trials = sweep_report.trials(os.path.join(out_dir, "s"))
    train_s = [float(rundir.load_run(tr["path"]).model_meta("final")["wall_s"]) for tr in trials]
    print(
        json.dumps(
            {
                "rc": rc,
                "trials": len(trials),
                "timesteps_per_trial": args.timesteps,
                "ray_start_s": round(ray_start_s, 2),
                "sweep_wall_s": round(sweep_s, 2),
                "trial_train_s": [round(x, 2) for x in train_s],
                "overhead_per_trial_s": round((sweep_s - sum(train_s)) / max(1, len(trials)), 2),
                "load_before": [round(x, 2) for x in load0],
                "load_after": [round(x, 2) for x in os.getloadavg()],
                "cpus": os.cpu_count(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
