"""Body of tests/test_ray_sweep.py, run inside a loopback-only network namespace: a Ray cluster
of two nodes (ray.cluster_utils.Cluster), a 2-trial grid sweep over seeds with one trial's worker
process SIGKILLed mid-trial, and an Optuna search interrupted (SIGINT to its driver) and
continued with ``manip-rl sweep --resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from manip_rl.distributed.netns import require_loopback_only

require_loopback_only("tests/ray_sweep_body.py")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ray_netns import emit, tcp_peers  # noqa: E402

from manip_rl import cli  # noqa: E402
from manip_rl.distributed import sweep_report  # noqa: E402
from manip_rl.policies import rundir  # noqa: E402

out_dir = sys.argv[1]
parts = sys.argv[2].split(",") if len(sys.argv) > 2 else ["grid", "search"]
result: dict = {}
t_start = time.monotonic()
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
address = cluster.address

TINY = [
    "--task", "PandaReach", "--timesteps", "800", "--no-progress", "--address", address,
    "--set", "n_envs=2", "--set", "vec_env=dummy", "--set", "checkpoint_freq=200",
    "--set", "eval.freq=200", "--set", "eval.episodes=2", "--set", "hyperparams.n_steps=50",
    "--set", "hyperparams.batch_size=50", "--set", "hyperparams.n_epochs=2",
    "--set", "policy_kwargs.net_arch=[16,16]", "--success-level", "0.0",
]  # fmt: skip


def wait_for_checkpoint(sweep_dir: str, min_steps: int, timeout: float = 300) -> tuple[str, dict]:
    """The first trial run directory with a checkpoint at >= min_steps, and its trial.json."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = os.path.join(sweep_dir, "runs")
        for name in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
            path = os.path.join(runs, name)
            try:
                latest = rundir.Run(path, {}).latest_checkpoint()
                with open(os.path.join(path, "trial.json")) as f:
                    info = json.load(f)
            except (OSError, ValueError):
                continue
            if latest and latest["timesteps"] >= min_steps:
                return path, info
        time.sleep(0.1)
    raise TimeoutError(f"no checkpoint >= {min_steps} steps in {sweep_dir}")


grid_dir = os.path.join(out_dir, "grid")
killed: dict = {}


def grid_part() -> None:
    # 1. A 2-trial grid over seeds; one trial's worker process killed after its first checkpoint.

    def kill_one() -> None:
        path, info = wait_for_checkpoint(grid_dir, 200)
        killed["path"], killed["pid"] = path, info["attempts"][-1]["pid"]
        killed["steps_at_kill"] = rundir.Run(path, {}).latest_checkpoint()["timesteps"]
        result["tcp_addresses"] = sorted(set(tcp_peers()))  # while both trials run
        os.kill(killed["pid"], signal.SIGKILL)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    t0 = time.monotonic()
    result["grid_rc"] = cli.main(["sweep", *TINY, "--n-seeds", "2", "--sweep-dir", grid_dir])
    result["grid_wall_s"] = round(time.monotonic() - t0, 1)
    killer.join(5)
    trials = sweep_report.trials(grid_dir)
    result["grid_trials"] = len(trials)
    result["grid_seeds"] = sorted(t["seed"] for t in trials)
    result["grid_final_steps"] = [rundir.load_run(t["path"]).model_meta("final")["timesteps"]
                                  for t in trials]  # fmt: skip
    with open(os.path.join(killed["path"], "trial.json")) as f:
        attempts = json.load(f)["attempts"]
    result["killed_attempts"] = len(attempts)
    result["killed_resumed_from"] = attempts[-1]["resumed_from_steps"]
    result["killed_steps_at_kill"] = killed["steps_at_kill"]
    result["first_attempt_nodes"] = len({json.load(open(os.path.join(t["path"], "trial.json")))
                                         ["attempts"][0]["node_id"] for t in trials})  # fmt: skip
    rows = sweep_report.summarize(grid_dir, "success_randomized", 0.0)
    result["summary_rows"] = [{k: r[k] for k in ("seeds", "evaluated", "steps", "reached")}
                              for r in rows]  # fmt: skip
    result["summary_md"] = open(os.path.join(grid_dir, "summary.md")).read()
    result["plot_bytes"] = os.path.getsize(os.path.join(grid_dir, "success.png"))


def search_part() -> None:
    """An Optuna search (one sample) stopped by SIGINT to its driver, then --resume."""
    search_dir = os.path.join(out_dir, "search")
    search = [*TINY, "--seeds", "3", "--sweep-dir", search_dir,
              "--search", "hyperparams.learning_rate=loguniform:1e-4:1e-3", "--samples", "1"]  # fmt: skip
    driver = subprocess.Popen([sys.executable, "-m", "manip_rl.cli", "sweep", *search],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    path, _ = wait_for_checkpoint(search_dir, 200)
    time.sleep(0.5)
    driver.send_signal(signal.SIGINT)
    driver_out, _ = driver.communicate(timeout=120)
    result["interrupted_rc"] = driver.returncode
    stopped = rundir.Run(path, {}).latest_checkpoint()["timesteps"]
    result["interrupted_at"] = stopped
    result["resume_rc"] = cli.main(["sweep", "--resume", search_dir, "--no-progress",
                                    "--address", address])  # fmt: skip
    with open(os.path.join(path, "trial.json")) as f:
        info = json.load(f)
    result["search_attempts"] = [a["resumed_from_steps"] for a in info["attempts"]]
    result["search_params"] = info["params"]
    result["search_final_steps"] = rundir.load_run(path).model_meta("final")["timesteps"]
    result["search_trials"] = len(sweep_report.trials(search_dir))


if "grid" in parts:
    grid_part()
if "search" in parts:
    search_part()
result["body_wall_s"] = round(time.monotonic() - t_start, 1)
ray.shutdown()
cluster.shutdown()
emit(result)
