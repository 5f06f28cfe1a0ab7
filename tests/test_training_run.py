"""Real training runs, tiny: the run directory contract, evaluation, and resume after SIGKILL."""

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from training_helpers import tiny_config

from manip_rl.policies import config as cfgmod
from manip_rl.policies import rundir
from manip_rl.policies.algorithms import ALGORITHMS, algorithm_class
from manip_rl.policies.train import train


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_every_algorithm_trains_into_a_loadable_run_directory(tmp_path, algo):
    path = str(tmp_path / algo)
    os.makedirs(path)
    cfg = tiny_config(algo)
    rundir.write_config(path, cfg)
    train(path, cfg, progress=False)

    run = rundir.load_run(path)
    assert (run.algo, run.env_id, run.seed) == (algo, "manip_rl/PandaReachDense-v0", 0)
    assert run.timesteps == 400
    assert run.randomization["physics"]["link_mass"]["range"] == [0.5, 1.5]
    assert set(run.eval_success) == {"randomized", "nominal", "episodes", "timesteps"}
    assert run.eval_success["timesteps"] == 400
    for which in ("best", "final", "latest"):
        model = run.load_model(which)
        assert isinstance(model, algorithm_class(algo))
        vn = run.load_vecnormalize(which)
        assert vn.obs_rms.mean.shape == model.observation_space.shape
        assert vn.venv is None
    # The final statistics saw every training observation: 400 steps + the 2 first resets.
    assert run.load_vecnormalize("final").obs_rms.count == pytest.approx(402, abs=0.01)
    rows = run.evaluations()
    assert [int(r["timesteps"]) for r in rows] == [200, 400]
    with open(os.path.join(path, "logs", "progress.csv")) as f:
        steps = [int(r["time/total_timesteps"]) for r in csv.DictReader(f)]
    assert steps == sorted(steps) and steps[-1] == 400
    with open(os.path.join(path, "logs", "progress.csv")) as f:
        rows = list(csv.DictReader(f))
    # The share of sampled actions the env clips, overall and per action dimension (7 joints).
    out = [
        float(r["rollout/actions_out_of_bounds"])
        for r in rows
        if r.get("rollout/actions_out_of_bounds")
    ]
    assert out and all(0.0 <= x <= 1.0 for x in out)
    assert {f"actions/out_of_bounds_{i}" for i in range(7)} <= set(rows[0])
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(os.path.join(path, "logs")))


def test_unusable_configurations_are_refused_with_the_key_named():
    cfg = cfgmod.load_config("PandaPush", "ppo")
    with pytest.raises(cfgmod.ConfigError, match="learning_rat"):
        cfgmod.apply_overrides(cfg, ["learning_rat=3"])
    with pytest.raises(cfgmod.ConfigError, match="KEY=VALUE"):
        cfgmod.apply_overrides(cfg, ["hyperparams.learning_rate"])
    with pytest.raises(cfgmod.ConfigError, match="n_envs"):
        cfgmod.validate(cfgmod.apply_overrides(cfg, ["n_envs=0"]))
    with pytest.raises(cfgmod.ConfigError, match="PandaStack"):
        cfgmod.load_config("PandaStack", "ppo")
    with pytest.raises(cfgmod.ConfigError, match="sac"):
        cfgmod.load_config("PandaPush", "sac")
    with pytest.raises(cfgmod.ConfigError, match="ray_transport='tcp': use one of direct, ray"):
        cfgmod.validate(cfgmod.apply_overrides(cfg, ["ray_transport=tcp"]))
    over = cfgmod.apply_overrides(
        cfg, ["hyperparams.learning_rate=1e-4", "policy_kwargs.net_arch=[8]"]
    )
    assert over["hyperparams"]["learning_rate"] == 1e-4
    assert over["policy_kwargs"]["net_arch"] == [8]
    with pytest.raises(rundir.RunError, match="config.yaml"):
        rundir.load_run(os.path.dirname(__file__))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "manip_rl.cli", *args]


def _latest_steps(path: str) -> int:
    p = os.path.join(path, "checkpoints", "latest.json")
    if not os.path.isfile(p):
        return 0
    with open(p) as f:
        return json.load(f)["timesteps"]


def test_a_run_killed_with_sigkill_resumes_from_its_last_checkpoint(tmp_path):
    path = str(tmp_path / "run")
    total = 2000
    common = ["--no-progress"]
    proc = subprocess.Popen(
        _cli("train", "--task", "PandaReach", "--run-dir", path, "--timesteps", str(total),
             "--n-envs", "2", "--vec-env", "dummy", "--set", "checkpoint_freq=100",
             "--set", "eval.freq=300", "--set", "eval.episodes=2",
             "--set", "hyperparams.n_steps=50", "--set", "hyperparams.batch_size=50",
             "--set", "hyperparams.n_epochs=2", "--set", "policy_kwargs.net_arch=[16,16]",
             "--set", "log_interval=1", *common),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while _latest_steps(path) < 600 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    out = proc.communicate()[0].decode()
    assert proc.returncode == -signal.SIGKILL, out
    killed_at = _latest_steps(path)
    assert 600 <= killed_at < total, "the run must die mid-way for this test to mean anything"
    assert not os.path.exists(os.path.join(path, "final"))
    with open(os.path.join(path, "checkpoints", f"vecnormalize_{killed_at}.pkl"), "rb") as f:
        count_at_kill = pickle.load(f).obs_rms.count
    assert count_at_kill == pytest.approx(killed_at + 2, abs=0.01)  # steps + first resets

    res = subprocess.run(_cli("train", "--resume", path, *common), capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr

    run = rundir.load_run(path)
    assert run.timesteps == total
    # Normalization statistics continued from the checkpoint instead of starting over.
    # (+2 first resets before the kill, +2 after the resume)
    assert run.load_vecnormalize("final").obs_rms.count == pytest.approx(total + 4, abs=0.01)
    with open(os.path.join(path, "logs", "progress.csv")) as f:
        steps = [int(r["time/total_timesteps"]) for r in csv.DictReader(f)]
    assert steps[0] == 100 and steps[-1] == total, "logs from before the kill are kept"
    assert steps == sorted(set(steps)), "no step is logged twice"
    assert max(np.diff(steps)) == 100, "no gap where the kill happened"
    evals = [int(r["timesteps"]) for r in run.evaluations()]
    assert evals == sorted(set(evals)) and evals[0] == 300 and evals[-1] == total
    walls = [float(r["wall_s"]) for r in run.evaluations()]
    assert walls == sorted(walls), "wall-clock continues across the resume"
    tb = _tb_steps(os.path.join(path, "logs"), "time/fps")
    assert tb == sorted(set(tb)) and tb[-1] == total, "TensorBoard holds each step once"


def test_resume_refuses_changed_settings_and_missing_runs(tmp_path):
    from manip_rl.cli import main

    with pytest.raises(SystemExit, match="does not exist"):
        main(["train", "--resume", str(tmp_path / "nope")])
    path = str(tmp_path / "run")
    os.makedirs(path)
    rundir.write_config(path, tiny_config("ppo"))
    with pytest.raises(SystemExit, match="--set cannot change it"):
        main(["train", "--resume", path, "--set", "n_envs=4"])
    with pytest.raises(SystemExit, match="no checkpoint to resume from"):
        main(["train", "--resume", path])
    with pytest.raises(SystemExit, match="already holds a run"):
        main(["train", "--task", "PandaReach", "--run-dir", path])


@pytest.mark.parametrize("randomization", ["none", "default"])
def test_training_envs_use_the_runs_own_randomization(randomization):
    """A nominal-only run trains on the nominal model (evaluation still judges it randomized)."""
    from manip_rl.policies.train import make_vec_env

    cfg = tiny_config("ppo", randomization=randomization)
    venv = make_vec_env(cfg, 0)
    try:
        configs = venv.get_attr("randomization_config")
    finally:
        venv.close()
    if randomization == "none":
        assert configs == [None, None]
    else:
        assert all(c is not None and c.physics for c in configs)


def test_train_env_kwargs_reach_the_training_envs_only():
    """PickPlace's grasped starts are a training aid: the training envs get them, the
    evaluation envs (built from the same config) do not; a non-mapping is refused by name."""
    from manip_rl.policies.train import make_vec_env

    cfg = cfgmod.load_config("PandaPickPlace", "ppo")
    assert cfg["train_env_kwargs"] == {"grasped_start": 0.5}
    cfg = cfgmod.apply_overrides(cfg, ["n_envs=2", "vec_env=dummy"])
    venv = make_vec_env(cfg, 0)
    try:
        assert venv.get_attr("grasped_start") == [0.5, 0.5]
    finally:
        venv.close()
    assert cfgmod.env_factory(cfg)().unwrapped.grasped_start == 0.0
    with pytest.raises(cfgmod.ConfigError, match="train_env_kwargs"):
        cfgmod.validate(cfgmod.apply_overrides(cfg, ["train_env_kwargs=3"]))


def test_env_kwargs_define_the_training_and_evaluation_envs():
    """push/fr3.yaml's env_kwargs (the FR3 trajectory path, 200-step episodes) reach the
    training envs and the evaluation envs alike; the training aids stay the training envs' own;
    bad values are refused by name."""
    from manip_rl.envs import registry
    from manip_rl.policies.train import make_vec_env

    fr3 = os.path.join(os.path.dirname(registry.get("PandaPush").train_path), "fr3.yaml")
    cfg = cfgmod.load_config("PandaPush", "ppo", fr3)
    assert cfg["env_kwargs"]["max_episode_steps"] == 200
    cfg = cfgmod.apply_overrides(cfg, ["n_envs=1", "vec_env=dummy"])
    cfg["train_env_kwargs"] = {"distance_threshold": 0.07}
    venv = make_vec_env(cfg, 0)
    try:
        assert venv.envs[0].spec.max_episode_steps == 200
        assert venv.envs[0].unwrapped.trajectory_path is not None
        assert venv.get_attr("distance_threshold") == [0.07]
    finally:
        venv.close()
    env = cfgmod.env_factory(cfg)()
    try:
        assert env.spec.max_episode_steps == 200
        assert env.unwrapped.trajectory_path is not None
        assert env.unwrapped.distance_threshold != 0.07
    finally:
        env.close()
    for bad, match in (
        ("env_kwargs=3", "env_kwargs=3: use a mapping"),
        ("env_kwargs={action_mode: ee_delta}", "have their own config keys"),
        ("env_kwargs={max_episode_steps: 0}", "env_kwargs.max_episode_steps=0"),
    ):
        with pytest.raises(cfgmod.ConfigError, match=match):
            cfgmod.validate(cfgmod.apply_overrides(cfg, [bad]))


def test_max_minutes_ends_a_run_with_a_last_evaluation_and_its_final_model(tmp_path, capsys):
    """A wall-clock budget far shorter than the step budget: training stops after the update in
    which it ran out, evaluates, checkpoints and saves the final model; resuming says it is
    complete, and a larger budget continues it."""
    from manip_rl.cli import main

    path = str(tmp_path / "timed")
    os.makedirs(path)
    cfg = tiny_config("ppo", steps=1_000_000, max_minutes=0.05)  # 3 s of a 2000 s budget
    rundir.write_config(path, cfg)
    t0 = time.monotonic()
    train(path, cfg, progress=False)
    assert time.monotonic() - t0 < 60
    run = rundir.load_run(path)
    ckpt = run.latest_checkpoint()
    assert 0 < ckpt["timesteps"] < 1_000_000
    assert ckpt["wall_s"] >= 3.0
    assert run.evaluations()[-1]["timesteps"] == str(ckpt["timesteps"])
    assert run.load_model("final").num_timesteps == ckpt["timesteps"]
    assert "max_minutes=0.05 reached" in capsys.readouterr().out
    assert main(["train", "--resume", path, "--no-progress"]) == 0
    assert "is complete (max_minutes=0.05)" in capsys.readouterr().out
    assert rundir.load_run(path).latest_checkpoint()["timesteps"] == ckpt["timesteps"]
    # Three seconds beyond what the run has used (on a loaded machine that may be past 0.1).
    more = f"{ckpt['wall_s'] / 60 + 0.05:.4f}"
    assert main(["train", "--resume", path, "--max-minutes", more, "--no-progress"]) == 0
    assert rundir.load_run(path).latest_checkpoint()["timesteps"] > ckpt["timesteps"]
    with pytest.raises(cfgmod.ConfigError, match="max_minutes"):
        cfgmod.validate({**cfg, "max_minutes": -1})


def test_update_threads_give_the_gradient_steps_the_cores_and_the_rollouts_one():
    """Real SB3 PPO: torch runs on one thread while the envs step and on update_threads during
    the update, and is back on one thread after learn()."""
    import torch
    from stable_baselines3.common.callbacks import BaseCallback

    from manip_rl.policies.callbacks import UpdateThreads
    from manip_rl.policies.train import make_vec_env

    cfg = tiny_config("ppo", update_threads=2)
    venv = make_vec_env(cfg, 0)
    from stable_baselines3 import PPO

    model = PPO("MlpPolicy", venv, n_steps=50, batch_size=50, n_epochs=1, device="cpu")
    seen = {"rollout": set(), "update": set()}
    train_once = model.train

    def train_and_record():
        seen["update"].add(torch.get_num_threads())
        train_once()

    model.train = train_and_record

    class Probe(BaseCallback):
        def _on_step(self) -> bool:
            seen["rollout"].add(torch.get_num_threads())
            return True

    torch.set_num_threads(1)
    try:
        model.learn(200, callback=[UpdateThreads.for_config(cfg), Probe()])
        assert seen == {"rollout": {1}, "update": {2}}
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)
        venv.close()
    assert UpdateThreads.for_config({"torch_threads": 1}).update >= 1
    with pytest.raises(cfgmod.ConfigError, match="update_threads"):
        cfgmod.validate({**cfg, "update_threads": 0})


def _tb_steps(log_dir: str, tag: str) -> list[int]:
    """The steps of ``tag`` as TensorBoard reads the run (every event file in ``log_dir``),
    with its orphaned-data purge off, so what is on disk is what is counted."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, purge_orphaned_data=False)
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_resume_drops_tensorboard_events_past_the_checkpoint(tmp_path):
    """A run killed at step 700 whose last checkpoint is at 500: after the resume TensorBoard
    holds each step once (the steps 600-700 of the killed run are gone, the resumed run writes
    them again), in both TensorBoard's reader and on disk; a record cut by the kill is dropped."""
    from torch.utils.tensorboard import SummaryWriter

    from manip_rl.policies.run_logs import truncate_logs as _truncate_logs

    run = str(tmp_path / "run")
    log_dir = os.path.join(run, "logs")
    first = SummaryWriter(log_dir)
    for step in range(100, 800, 100):
        first.add_scalar("train/loss", float(step), step)
    first.close()
    (events,) = os.listdir(log_dir)
    with open(os.path.join(log_dir, events), "ab") as f:  # the kill cut a record short
        f.write(b"\x20\x00\x00\x00\x00\x00\x00\x00\x01\x02")
    _truncate_logs(run, 500)
    assert _tb_steps(log_dir, "train/loss") == [100, 200, 300, 400, 500]
    time.sleep(1.1)  # SummaryWriter names its file by the second
    resumed = SummaryWriter(log_dir)
    for step in range(600, 1100, 100):
        resumed.add_scalar("train/loss", float(step), step)
    resumed.close()
    steps = _tb_steps(log_dir, "train/loss")
    assert steps == list(range(100, 1100, 100)), steps
    # The kept events are the originals.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir)
    acc.Reload()
    assert [e.value for e in acc.Scalars("train/loss")][:5] == [100.0, 200.0, 300.0, 400.0, 500.0]
