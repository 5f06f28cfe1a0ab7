"""Robustness sweeps and the held-out dynamics set, on the real MuJoCo env with real policies
(the scripted controller and a tiny PPO policy trained and exported here)."""

import csv
import glob
import json
import os

import gymnasium as gym
import numpy as np
import pytest
import yaml

import manip_rl  # noqa: F401
from manip_rl.cli import main as cli_main
from manip_rl.envs.randomization import CONFIG_DIR, load_config
from manip_rl.transfer.actors import ScriptedActor, load_actor
from manip_rl.transfer.adr_env import set_env_randomization
from manip_rl.transfer.boundaries import Boundaries, boundary_audit, load_boundaries, verdict
from manip_rl.transfer.cli import parse_quantities
from manip_rl.transfer.reports import CSV_COLUMNS, boundary_markdown, plot_boundaries
from manip_rl.transfer.shifts import (
    HELDOUT_DIR,
    QUANTITIES,
    RobustnessError,
    heldout_sets,
    shift_config,
)
from manip_rl.transfer.sweep import sweep

TASKS = ("reach", "push", "pick_place")


# ------------------------------------------------------------------------------------ shifts
def test_a_shift_sets_its_quantity_in_the_real_model_and_leaves_the_rest_nominal():
    env = gym.make("manip_rl/PandaPush-v0")
    base = env.unwrapped
    m, ids = base.model, base.ids
    mass, damping = m.body_mass.copy(), m.dof_damping.copy()
    friction, gain = m.geom_friction.copy(), m.actuator_gainprm.copy()

    set_env_randomization(env, shift_config("push", {"mass_scale": 2.0}))
    _, info = env.reset(seed=0)
    np.testing.assert_allclose(m.body_mass[ids.arm_bodies], 2 * mass[ids.arm_bodies])
    assert m.body_mass[ids.object_body] == pytest.approx(2 * mass[ids.object_body])
    np.testing.assert_array_equal(m.dof_damping, damping)
    np.testing.assert_array_equal(m.geom_friction, friction)
    assert info["randomization"]["action_latency"] == 0

    set_env_randomization(env, shift_config("push", {"actuator_gain_scale": 0.5,
                                                     "action_latency": 3}))  # fmt: skip
    _, info = env.reset(seed=0)
    np.testing.assert_array_equal(m.body_mass, mass)  # the previous shift is undone
    a = ids.arm_actuators
    np.testing.assert_allclose(m.actuator_gainprm[a, 0], 0.5 * gain[a, 0])
    assert info["randomization"]["action_latency"] == 3

    noisy = shift_config("push", {"observation_noise": 10})
    default = load_config("default", "push")
    assert noisy.observation_noise["object_pos"] == pytest.approx(
        10 * default.observation_noise["object_pos"]
    )
    set_env_randomization(env, None)
    env.reset(seed=0)
    np.testing.assert_array_equal(m.body_mass, mass)
    env.close()


def test_bad_shifts_are_refused_with_the_quantity_named():
    for shifts, match in (
        ({"mass": 2.0}, "mass"),
        ({"mass_scale": 0.0}, "mass_scale"),
        ({"action_latency": 1.5}, "action_latency"),
        ({"observation_noise": -1}, "observation_noise"),
    ):
        with pytest.raises(RobustnessError, match=match):
            shift_config("push", shifts)
    with pytest.raises(RobustnessError, match="--quantities"):
        parse_quantities("mass_scale,wind", [])
    with pytest.raises(RobustnessError, match="numbers"):
        parse_quantities("mass_scale", ["mass_scale=1,heavy"])
    assert parse_quantities("mass_scale", ["action_latency=0,2"]) == {
        "mass_scale": QUANTITIES["mass_scale"].values,
        "action_latency": (0.0, 2.0),
    }


# ------------------------------------------------------------------------------------ held out
def _physics_bounds(cfg):
    return {k: r.bounds() for k, r in cfg.physics.items()}


@pytest.mark.parametrize("task", TASKS)
def test_the_heldout_set_lies_outside_every_default_training_range(task):
    train = load_config("default", task)
    train_physics = _physics_bounds(train)
    sets = heldout_sets(task)
    assert {"heavy", "slippery", "damped", "weak_servos", "laggy", "combined"} <= set(sets)
    for name, cfg in sets.items():
        shifted = False
        for key, (lo, hi) in _physics_bounds(cfg).items():
            if key in train_physics:
                t_lo, t_hi = train_physics[key]
                assert hi < t_lo or lo > t_hi, f"{name}: {key} [{lo}, {hi}] overlaps training"
                shifted = True
        if cfg.action_latency[0] > train.action_latency[1]:
            shifted = True
        for sensor, std in cfg.observation_noise.items():
            if std > train.observation_noise.get(sensor, 0.0):
                shifted = True
        assert shifted, f"held-out set {name} shifts nothing past the training defaults"


def test_no_training_configuration_uses_the_heldout_set():
    tasks_dir = os.path.join(os.path.dirname(CONFIG_DIR), "tasks")
    files = glob.glob(os.path.join(tasks_dir, "*", "train.yaml")) + glob.glob(
        os.path.join(CONFIG_DIR, "*.yaml")
    )
    assert len(files) >= 8, files  # a train file and a randomization file per task
    for f in files:
        with open(f) as fh:
            text = fh.read()
        assert "heldout" not in text, f
        yaml.safe_load(text)


# ------------------------------------------------------------------------------------ sweeps
def test_a_shift_that_breaks_the_physics_lowers_a_strong_policys_success():
    actor = ScriptedActor("manip_rl/PandaReach-v0")
    quantities = {"actuator_gain_scale": (1.0, 0.05), "damping_scale": (30.0,)}
    points = sweep([actor], quantities, {}, episodes=8, progress=False)
    by = {(p.quantity, p.value): p for p in points}
    nominal = by[("nominal", "")]
    assert nominal.success >= 0.85  # the scripted reach is strong in the nominal world
    assert by[("actuator_gain_scale", 1.0)].successes == nominal.successes  # same seeds
    # Servos at 5% stiffness cannot hold the arm up; 30x joint damping cannot move it in time.
    assert by[("actuator_gain_scale", 0.05)].success <= 0.25
    assert by[("damping_scale", 30.0)].success <= 0.25
    assert by[("actuator_gain_scale", 0.05)].interval[1] < nominal.interval[0] + 0.3


def test_the_scripted_reference_handles_a_last_batch_smaller_than_its_envs():
    actor = ScriptedActor("manip_rl/PandaReach-v0")
    (point,) = sweep([actor], {}, {}, episodes=11, progress=False)
    assert point.episodes == 11 and point.success >= 0.8


@pytest.fixture(scope="module")
def tiny_policy(tmp_path_factory):
    """A PPO policy trained on Reach for 200 steps and exported: a real, if weak, policy file."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from manip_rl.export import export_policy

    d = tmp_path_factory.mktemp("policy")
    venv = VecNormalize(
        make_vec_env(
            "manip_rl/PandaReachDense-v0", n_envs=2, wrapper_class=gym.wrappers.FlattenObservation
        )
    )
    model = PPO("MlpPolicy", venv, n_steps=50, batch_size=50, n_epochs=1, seed=0,
                policy_kwargs={"net_arch": [16, 16]})  # fmt: skip
    model.learn(200)
    path = str(d / "tiny.pt")
    export_policy(model, path, env_id="manip_rl/PandaReachDense-v0", vecnormalize=venv)
    # The same policy as a file trained with env_kwargs (20-step episodes), beside it.
    export_policy(model, str(d / "tiny_short.pt"), env_id="manip_rl/PandaReachDense-v0",
                  vecnormalize=venv, provenance={"env_kwargs": {"max_episode_steps": 20}})  # fmt: skip
    venv.close()
    return path


def test_a_files_env_kwargs_shape_the_sweeps_envs(tmp_path, tiny_policy):
    # A file trained with env_kwargs (here 20-step episodes) is swept in that env.
    from manip_rl.transfer.actors import load_actor
    from manip_rl.transfer.sweep import Runner

    short = os.path.join(os.path.dirname(tiny_policy), "tiny_short.pt")
    for path, steps in ((short, 20), (tiny_policy, 50)):  # 50: PandaReach's own
        runner = Runner(load_actor(path, str(tmp_path)), n_envs=1)
        try:
            assert runner.envs[0].spec.max_episode_steps == steps
        finally:
            runner.close()


def test_the_cli_sweeps_several_policies_into_a_table_a_csv_and_a_png(tmp_path, tiny_policy):
    out = tmp_path / "rob"
    laggy = os.path.join(HELDOUT_DIR, "laggy.yaml")
    rc = cli_main(["robustness", tiny_policy, "scripted:manip_rl/PandaReach-v0",
                   "--episodes", "3", "--quantities", "mass_scale,action_latency",
                   "--values", "mass_scale=0.5,2", "--values", "action_latency=0,3",
                   "--shift-sets", laggy, "--out", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    with open(out / "robustness.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    # 2 policies x (nominal + 2 masses + 2 latencies + 1 shift set)
    assert len(rows) == 12
    assert {r["policy"] for r in rows} == {"tiny", "scripted:PandaReach-v0"}
    for r in rows:
        assert r["episodes"] == "3"
        s, lo, hi = float(r["success"]), float(r["ci_low"]), float(r["ci_high"])
        assert 0 <= lo <= s <= hi <= 1
    sweep_rows = [(r["quantity"], r["value"]) for r in rows if r["policy"] == "tiny"]
    assert sweep_rows == [("nominal", ""), ("mass_scale", "0.5"), ("mass_scale", "2.0"),
                          ("action_latency", "0.0"), ("action_latency", "3.0"),
                          ("laggy", "")]  # fmt: skip
    md = (out / "robustness.md").read_text()
    assert "| quantity | value | tiny | scripted:PandaReach-v0 |" in md
    assert "| laggy |" in md and "| nominal |" in md
    png = (out / "robustness.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg

    img = mpimg.imread(str(out / "robustness.png"))
    assert img.shape[0] > 200 and img.shape[1] > 400
    assert not list(tmp_path.glob("rob/.*tmp*"))  # written atomically, nothing left over


def test_a_run_directory_and_its_exported_file_give_the_same_curve(tmp_path):
    from manip_rl.export import export_policy
    from manip_rl.policies import config as cfgmod
    from manip_rl.policies import rundir
    from manip_rl.policies.train import train

    cfg = cfgmod.load_config("PandaReach", "ppo")
    cfg.update(total_timesteps=200, n_envs=2, vec_env="dummy", checkpoint_freq=200, log_interval=1)
    cfg["eval"] = {"freq": 0, "episodes": 1}
    cfg["policy_kwargs"] = {"net_arch": [16, 16]}
    cfg["hyperparams"].update(n_steps=50, batch_size=50, n_epochs=1)
    cfg["randomization"] = cfgmod.randomization_dict(cfg)
    run = str(tmp_path / "run")
    os.makedirs(run)
    rundir.write_config(run, cfg)
    train(run, cfg, progress=False)
    exported = str(tmp_path / "policy.pt")
    export_policy(run, exported)
    actors = [load_actor(run, str(tmp_path)), load_actor(exported, str(tmp_path))]
    assert [a.label for a in actors] == ["run", "policy"]
    points = sweep(actors, {"friction_scale": (0.5,)}, {}, episodes=2, progress=False)
    a, b = [[p.successes for p in points if p.policy == lbl] for lbl in ("run", "policy")]
    assert a == b and len(a) == 2


def test_bad_policies_are_refused_clearly(tmp_path):
    with pytest.raises(SystemExit, match="neither a policy file"):
        cli_main(["robustness", str(tmp_path / "nope.pt"), "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="no such environment"):
        cli_main(["robustness", "scripted:manip_rl/PandaFly-v0", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="different tasks"):
        cli_main(["robustness", "scripted:manip_rl/PandaReach-v0",
                  "scripted:manip_rl/PandaPush-v0", "--episodes", "1", "--quantities", "",
                  "--shift-sets", "--out", str(tmp_path), "--no-progress"])  # fmt: skip


# ------------------------------------------------------------------------------------ boundaries
def test_an_episode_config_pins_one_boundary_and_draws_the_rest_from_their_ranges():
    from manip_rl.transfer import adr, adr_env

    settings = adr.load_settings(None, "push")
    state = adr.AdrState(settings, {"joint_damping": [0.5, 2.0], "link_mass": [0.8, 1.5],
                                    "action_latency": [0, 2]})  # fmt: skip
    base = load_config("default", "push")
    cfg = state.episode_config(np.random.default_rng(0), base, adr_env.default_noise("push"),
                               "joint_damping:low")  # fmt: skip
    d = cfg.physics["joint_damping"]
    assert (d.low, d.high) == (0.5, 0.5)
    m = cfg.physics["link_mass"]
    assert (m.low, m.high) == (0.8, 1.5)
    assert cfg.action_latency == (0, 2)
    assert cfg.physics["gravity"] == base.physics["gravity"]  # not ADR's: the base's
    with pytest.raises(adr.AdrConfigError, match="joint_damping:middle"):
        state.episode_config(np.random.default_rng(0), base, {}, "joint_damping:middle")


def test_the_hand_set_ranges_are_audited_as_adr_ranges():
    from manip_rl.transfer import adr, adr_env

    b = load_boundaries("default", "push")
    assert b.ranges["joint_damping"] == [0.3, 3.0]
    assert b.ranges["action_latency"] == [0, 1]
    assert b.settings.success_high == 0.8  # the default ADR thresholds judge them
    # Hand-set sensor noise is a fixed x1, from the base, not a range with an end to probe.
    assert "observation_noise" not in b.settings.names
    cfg = adr.AdrState(b.settings, b.ranges).episode_config(
        np.random.default_rng(0), b.base, adr_env.default_noise("push"), "friction:low"
    )
    assert cfg.observation_noise == b.base.observation_noise
    with pytest.raises(RobustnessError, match="randomizes nothing"):
        load_boundaries("none", "push")
    with pytest.raises(RobustnessError, match="does not exist"):
        load_boundaries("nope.yaml", "push")


def test_a_boundary_the_controller_cannot_handle_is_judged_narrow(tmp_path):
    from manip_rl.transfer import adr

    settings = adr.AdrSettings.from_dict({"params": {"joint_damping": {"hard": [0.1, 50]}}},
                                         "reach")  # fmt: skip
    actor = ScriptedActor("manip_rl/PandaReach-v0")
    narrow = Boundaries("narrow", settings, {"link_mass": [1.0, 1.2],
                                             "joint_damping": [1.0, 1.1]}, None)  # fmt: skip
    wide = Boundaries("wide", settings, {"link_mass": [1.0, 1.2],
                                         "joint_damping": [1.0, 30.0]}, None)  # fmt: skip
    easy = boundary_audit([actor], narrow, episodes=8, progress=False)
    hard = boundary_audit([actor], wide, episodes=8, progress=False)
    # Ends at the nominal value (damping low, mass low, the latencies) are not probed.
    assert [(p.quantity, p.value) for p in hard] == [("link_mass:high", 1.2),
                                                    ("joint_damping:high", 30.0)]  # fmt: skip
    assert all(verdict(p.success, settings) == "widen" for p in easy)
    # 30x damping cannot move the arm in time: ADR would pull that end in ...
    assert hard[1].success <= 0.25 and verdict(hard[1].success, settings) == "narrow"
    # ... and the mass boundary, tested with damping drawn from [1, 30], suffers with it.
    assert hard[0].success < easy[0].success
    md = boundary_markdown(hard, wide)
    assert "| joint_damping:high | 30 |" in md and "narrow" in md
    plot_boundaries(hard, wide, str(tmp_path / "b.png"))
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    b_nominal = Boundaries("nominal", settings, {}, None)
    with pytest.raises(RobustnessError, match="nominal point"):
        boundary_audit([actor], b_nominal, episodes=1, progress=False)


def test_the_cli_audits_an_adr_runs_ranges(tmp_path):
    from manip_rl.fileio import atomic_write_text
    from manip_rl.policies import config as cfgmod
    from manip_rl.policies import rundir
    from manip_rl.transfer import adr, adr_run

    run = str(tmp_path / "adr_run")
    os.makedirs(run)
    cfg = cfgmod.load_config("PandaReach", "ppo")
    cfg["randomization"] = cfgmod.randomization_dict(cfg)
    rundir.write_config(run, cfg)
    settings = adr_run.init_run(run, cfg, {"success_high": 0.9})
    state = adr.AdrState(settings, {"actuator_gain": [0.9, 1.0], "observation_latency": [0, 1]})
    atomic_write_text(os.path.join(run, "adr", "ranges.json"), json.dumps(state.to_dict()))
    out = tmp_path / "audit"
    rc = cli_main(["robustness", "scripted:manip_rl/PandaReach-v0", "--boundaries", run,
                   "--episodes", "2", "--out", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    with open(out / "boundaries.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["kind"], r["quantity"], r["value"]) for r in rows] == [
        ("boundary", "actuator_gain:low", "0.9"),
        ("boundary", "observation_latency:high", "1.0"),
    ]
    assert "widen >= 0.9" in (out / "boundaries.md").read_text()  # the run's own thresholds
    assert (out / "boundaries.png").is_file()

    with pytest.raises(SystemExit, match="drop --quantities"):
        cli_main(["robustness", "scripted:manip_rl/PandaReach-v0", "--boundaries", run,
                  "--quantities", "mass_scale", "--out", str(out)])  # fmt: skip
    with pytest.raises(SystemExit, match="not an ADR run"):
        cli_main(["robustness", "scripted:manip_rl/PandaReach-v0", "--boundaries",
                  str(tmp_path), "--out", str(out), "--no-progress"])  # fmt: skip
    with pytest.raises(SystemExit, match="an ADR run of reach, the policies are push"):
        cli_main(["robustness", "scripted:manip_rl/PandaPush-v0", "--boundaries", run,
                  "--out", str(out), "--no-progress"])  # fmt: skip
