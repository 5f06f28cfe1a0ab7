"""Automatic domain randomization: the update rule on hand-made success sequences, the wrapper on
the real MuJoCo env, and real training runs that log, save and resume the ranges."""

import csv
import json
import math
import os

import gymnasium as gym
import numpy as np
import pytest

import manip_rl  # noqa: F401
from manip_rl.cli import main as cli_main
from manip_rl.transfer import adr, adr_callback, adr_env, adr_plot


def settings(**over):
    rule = {"buffer_size": 5, "boundary_prob": 1.0, "success_high": 0.8, "success_low": 0.4}
    rule.update(over)
    return adr.AdrSettings.from_dict(rule, "push")


def feed(state, boundary, successes):
    """Record a sequence of episode results at the boundary's current value."""
    updates = []
    for s in successes:
        u = state.record(boundary, state.value(boundary), s)
        if u is not None:
            updates.append(u)
    return updates


# ------------------------------------------------------------------------------------ rule
def test_a_full_buffer_of_successes_widens_the_boundary_by_one_step():
    st = adr.AdrState(settings())
    assert st.ranges["link_mass"] == [1.0, 1.0]  # ADR starts at the nominal point
    assert feed(st, "link_mass:high", [1, 1, 1, 1]) == []  # buffer not full: no decision
    (u,) = feed(st, "link_mass:high", [1])
    assert (u.action, u.success, u.episodes) == ("widen", 1.0, 5)
    assert st.ranges["link_mass"] == [1.0, pytest.approx(math.exp(0.1), abs=1e-6)]
    assert st.buffers["link_mass:high"] == []  # emptied after the decision
    (u,) = feed(st, "link_mass:low", [1, 1, 1, 1, 0])  # 80% is at the threshold: widens
    assert u.action == "widen"
    assert st.ranges["link_mass"][0] == pytest.approx(math.exp(-0.1), abs=1e-6)
    # Other quantities are untouched.
    assert st.ranges["friction"] == [1.0, 1.0]


def test_a_full_buffer_of_failures_narrows_and_middling_success_keeps():
    s = adr.AdrSettings.from_dict(
        {"buffer_size": 4, "params": {"friction": {"init": [0.5, 2.0]}}}, "push"
    )
    st = adr.AdrState(s)
    (u,) = feed(st, "friction:high", [0, 1, 0, 0])  # 25% <= 40%
    assert u.action == "narrow"
    assert st.ranges["friction"] == [0.5, pytest.approx(2.0 * math.exp(-0.05), abs=1e-6)]
    (u,) = feed(st, "friction:low", [1, 0, 1, 1])  # 75%: between the thresholds
    assert u.action == "keep" and st.ranges["friction"][0] == 0.5


def test_ranges_stop_at_the_hard_limits_and_never_narrow_past_nominal():
    st = adr.AdrState(settings())
    for _ in range(40):
        feed(st, "link_mass:high", [1] * 5)
        feed(st, "link_mass:low", [1] * 5)
    assert st.ranges["link_mass"] == [0.25, 4.0]  # exactly the hard limits, never past
    (u,) = feed(st, "link_mass:high", [1] * 5)
    assert u.action == "keep"  # at the limit a success changes nothing
    for _ in range(40):
        feed(st, "link_mass:high", [0] * 5)
        feed(st, "link_mass:low", [0] * 5)
    assert st.ranges["link_mass"] == [1.0, 1.0]  # back to nominal, not across it


def test_latency_moves_in_whole_control_steps_up_to_its_limit():
    st = adr.AdrState(settings())
    seen = []
    for _ in range(5):
        feed(st, "action_latency:high", [1] * 5)
        seen.append(st.ranges["action_latency"][1])
    assert seen == [1.0, 2.0, 3.0, 3.0, 3.0]
    # Nominal latency 0 is also the hard lower limit: that boundary is never evaluated.
    assert "action_latency:low" not in st.boundaries
    assert "observation_noise:low" not in st.boundaries
    assert "link_mass:low" in st.boundaries


def test_episodes_that_ran_at_an_old_boundary_value_are_dropped():
    st = adr.AdrState(settings())
    old = st.value("link_mass:high")
    feed(st, "link_mass:high", [1] * 5)  # widened
    assert st.record("link_mass:high", old, 1.0) is None
    assert st.buffers["link_mass:high"] == []
    assert st.record("no_such:high", 1.0, 1.0) is None


def test_state_round_trips_through_its_dict():
    st = adr.AdrState(settings())
    feed(st, "friction:high", [1] * 5)
    feed(st, "joint_damping:low", [1, 0])
    d = json.loads(json.dumps(st.to_dict()))
    back = adr.AdrState(settings(), d["ranges"], d["buffers"], d["last_success"])
    assert back.ranges == st.ranges and back.buffers == st.buffers
    assert back.last_success == st.last_success == {"friction:high": 1.0}
    assert back.nats_per_dimension() == pytest.approx(st.nats_per_dimension())
    assert st.nats_per_dimension() > adr.AdrState(settings()).nats_per_dimension()


def test_settings_errors_name_the_key():
    cases = [
        ({"buffer_size": 0}, "buffer_size"),
        ({"success_low": 0.9, "success_high": 0.5}, "success_low"),
        ({"boundary_prob": 1.5}, "boundary_prob"),
        ({"boundary_focus": -1}, "boundary_focus"),
        ({"boundary_focus": "weak"}, "boundary_focus"),
        ({"typo": 1}, "typo"),
        ({"params": {"mass": {}}}, "mass"),
        ({"params": {"link_mass": {"init": [0.1, 2.0]}}}, "params.link_mass.init"),
        ({"params": {"link_mass": {"hard": [0.0, 2.0]}}}, "params.link_mass.hard"),
        ({"params": {"action_latency": {"space": "log"}}}, "params.action_latency.space"),
    ]
    for d, key in cases:
        with pytest.raises(adr.AdrConfigError, match=key.replace(".", r"\.")):
            adr.AdrSettings.from_dict(d, "push")
    with pytest.raises(adr.AdrConfigError, match="no_such.yaml"):
        adr.load_settings("no_such.yaml", "push")
    # Reach has no object: its ADR leaves object mass and size out.
    names = {p.name for p in adr.AdrSettings.from_dict({}, "reach").params}
    assert "object_mass" not in names and "link_mass" in names


def test_boundary_focus_gives_the_weakest_boundaries_more_episodes():
    """Uniform by default; with boundary_focus a boundary that fell short of success_high at its
    last decision is evaluated in proportion to 1 + focus * shortfall."""
    rng = np.random.default_rng(0)

    def picks(st, n=4000):
        counts = dict.fromkeys(st.boundaries, 0)
        for _ in range(n):
            counts[st.sample_episode(rng, None, {})[1]] += 1
        return counts

    for focus in (0.0, 10.0):
        st = adr.AdrState(settings(boundary_focus=focus))
        feed(st, "joint_damping:low", [1, 0, 0, 0, 1])  # 40% at its last decision
        feed(st, "friction:high", [1] * 5)  # 100%: no shortfall
        w = st.boundary_weights()
        b = st.boundaries
        assert w[b.index("joint_damping:low")] == pytest.approx(1 + focus * 0.4)
        assert w[b.index("friction:high")] == 1.0
        counts = picks(st)
        share = counts["joint_damping:low"] / 4000
        expected = w[b.index("joint_damping:low")] / w.sum()
        assert share == pytest.approx(expected, abs=0.02), (focus, share, expected)
    # Focus 10 gives the 40% boundary 5x the episodes of one that succeeded.
    assert counts["joint_damping:low"] > 3 * counts["friction:high"]
    # The env factory (what a resumed run's workers are built from) carries those weights.
    factory = adr_env.AdrEnvFactory(
        lambda: gym.make("manip_rl/PandaPush-v0"), st.settings.to_dict(), "push",
        st.ranges, None, 0, dict(st.last_success),
    )  # fmt: skip
    env = factory()
    assert env.adr.last_success == st.last_success
    np.testing.assert_allclose(env.adr.boundary_weights(), w)
    env.close()


# ------------------------------------------------------------------------------------ env side
def test_the_wrapper_pins_the_evaluated_boundary_in_the_real_model():
    s = adr.AdrSettings.from_dict(
        {"boundary_prob": 1.0, "params": {"link_mass": {"init": [0.6, 1.7]}}}, "push"
    )
    env = adr_env.AdrWrapper(gym.make("manip_rl/PandaPush-v0"), s, seed=3)
    base = env.unwrapped
    arm = base.ids.arm_bodies
    nominal = base.model.body_mass[arm].copy()
    pinned = set()
    for k in range(30):
        _, info = env.reset(seed=k)
        boundary, value = info["adr_boundary"]
        _, _, _, _, step_info = env.step(env.action_space.sample())
        assert step_info["adr_boundary"] == (boundary, value)
        if boundary.startswith("link_mass:"):
            pinned.add(boundary)
            np.testing.assert_allclose(base.model.body_mass[arm], nominal * value, rtol=1e-9)
        else:
            ratio = base.model.body_mass[arm] / nominal
            assert np.all((ratio >= 0.6 - 1e-9) & (ratio <= 1.7 + 1e-9))
    assert pinned == {"link_mass:low", "link_mass:high"}
    # New ranges arrive through env_method("adr_set_ranges") and apply from the next reset.
    env.adr_set_ranges({**env.adr_ranges(), "link_mass": [0.9, 1.1]})
    env.adr.settings = adr.AdrSettings.from_dict({"boundary_prob": 0.0}, "push")
    for k in range(5):
        _, info = env.reset(seed=100 + k)
        assert info["adr_boundary"] is None
        ratio = base.model.body_mass[arm] / nominal
        assert np.all((ratio >= 0.9 - 1e-9) & (ratio <= 1.1 + 1e-9))
    env.close()


def test_nominal_ranges_leave_the_model_nominal_and_the_sensors_clean():
    env = adr_env.AdrWrapper(gym.make("manip_rl/PandaPush-v0"), settings(boundary_prob=0.0), seed=0)
    base = env.unwrapped
    nominal = base.model.body_mass.copy(), base.model.dof_damping.copy()
    obs1, _ = env.reset(seed=5)
    np.testing.assert_array_equal(base.model.body_mass, nominal[0])
    np.testing.assert_array_equal(base.model.dof_damping, nominal[1])
    # No noise at the nominal point: the same seed gives the same observation.
    obs2, _ = env.reset(seed=5)
    np.testing.assert_array_equal(obs1["observation"], obs2["observation"])
    env.close()


# ------------------------------------------------------------------------------------ training
def read_events(path):
    with open(os.path.join(path, "adr", "ranges.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_training_with_adr_logs_saves_and_resumes_the_ranges(tmp_path):
    """A real (tiny) PPO run on Reach, both envs in one chunked worker process (ranges reach them
    through env_method). Its untrained policy fails at
    the boundaries, so ADR narrows link_mass from [0.5, 1.5] toward nominal; the resumed run
    continues from the saved ranges, not from the initial ones."""
    yaml_path = tmp_path / "adr.yaml"
    yaml_path.write_text(
        # boundary_focus: the workers also get the last successes through env_method.
        "buffer_size: 2\nboundary_prob: 1.0\nboundary_focus: 5\n"
        "params:\n  link_mass: {init: [0.5, 1.5]}\n"
        + "".join(
            f"  {n}: null\n"
            for n in (
                "friction",
                "joint_damping",
                "armature",
                "actuator_gain",
                "action_latency",
                "observation_latency",
                "observation_noise",
            )
        )  # fmt: skip
    )
    run = str(tmp_path / "run")
    common = ["--no-progress", "--set", "eval.freq=0", "--set", "log_interval=1"]
    cli_main(["train", "--task", "PandaReach", "--dr", str(yaml_path), "--timesteps", "1000",
              "--n-envs", "2", "--vec-env", "chunked", "--set", "n_workers=1",
              "--set", "checkpoint_freq=500",
              "--set", "policy_kwargs.net_arch=[16,16]", "--run-dir", run, *common])  # fmt: skip
    events = read_events(run)
    assert events[0]["action"] == "start" and float(events[0]["low"]) == 0.5
    decisions = [e for e in events if e["action"] != "start"]
    # 20 episodes, all at a link_mass boundary, decided in pairs. The workers only report the
    # value they ran at; a decision needs two episodes at the *current* value, so more than two
    # narrowings mean the new ranges reached the worker processes.
    narrowed = [e for e in decisions if e["action"] == "narrow"]
    assert len(narrowed) >= 3, decisions
    with open(os.path.join(run, "adr", "ranges.json")) as f:
        saved = json.load(f)
    assert saved["timesteps"] == 1000
    assert set(saved["last_success"]) == {"link_mass:low", "link_mass:high"}
    lo, hi = saved["ranges"]["link_mass"]
    assert 0.5 < lo <= 1.0 and 1.0 <= hi < 1.5 and (lo, hi) != (0.5, 1.5)
    assert [float(events[-1]["low"]), float(events[-1]["high"])] == [lo, hi]
    assert os.path.isfile(os.path.join(run, "adr", "state_1000.json"))
    # The ranges reach SB3's logger: progress.csv (and TensorBoard) carry adr/ columns.
    with open(os.path.join(run, "logs", "progress.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert "adr/link_mass_low" in rows[0] and "adr/nats_per_dimension" in rows[0]
    assert float(rows[-1]["adr/link_mass_low"]) == pytest.approx(lo)

    cli_main(["train", "--resume", run, "--timesteps", "1600", "--no-progress"])
    events2 = read_events(run)
    assert events2[: len(events)] == events  # history kept; no second "start"
    assert sum(e["action"] == "start" for e in events2) == sum(
        e["action"] == "start" for e in events
    )
    resumed = events2[len(events) :]
    assert resumed and int(resumed[0]["timesteps"]) > 1000
    # The first decision after the resume moved from the saved range (one step at most), not
    # from the initial [0.5, 1.5].
    first = resumed[0]
    f_lo, f_hi = float(first["low"]), float(first["high"])
    assert f_lo == pytest.approx(lo) or f_lo == pytest.approx(min(1.0, lo * math.exp(0.1)))
    assert f_hi == pytest.approx(hi) or f_hi == pytest.approx(max(1.0, hi * math.exp(-0.1)))
    with open(os.path.join(run, "adr", "ranges.json")) as f:
        final = json.load(f)
    assert final["timesteps"] == 1600
    lo2, hi2 = final["ranges"]["link_mass"]
    assert lo <= lo2 <= 1.0 <= hi2 <= hi  # kept narrowing from where it was

    png = tmp_path / "ranges.png"
    adr_plot.plot_ranges(run, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_without_adr_has_no_adr_state(tmp_path):
    from manip_rl.policies import config as cfgmod

    cfg = cfgmod.load_config("PandaReach", "ppo")
    assert adr_callback.AdrCallback.for_run(str(tmp_path), cfg, None) is None
    with pytest.raises(SystemExit, match="--dr"):
        cli_main(["train", "--task", "PandaReach", "--dr", str(tmp_path / "missing.yaml"),
                  "--run-dir", str(tmp_path / "r"), "--timesteps", "100"])  # fmt: skip
    assert not os.path.exists(tmp_path / "r")
    # A run keeps its kind on --resume: --dr cannot switch ADR on (or change its settings).
    from manip_rl.policies import rundir

    os.makedirs(tmp_path / "plain")
    rundir.write_config(str(tmp_path / "plain"), cfg)
    with pytest.raises(SystemExit, match="--dr"):
        cli_main(["train", "--resume", str(tmp_path / "plain"), "--dr", "adr"])


def test_settings_round_trip_through_their_dict_with_quantities_left_out():
    s = adr.AdrSettings.from_dict(
        {"buffer_size": 7, "params": {"friction": None, "link_mass": {"step": 0.2}}}, "push"
    )
    back = adr.AdrSettings.from_dict(json.loads(json.dumps(s.to_dict())), "push")
    assert back == s
    assert "friction" not in back.names and back.param("link_mass").step == 0.2


def test_with_a_strong_controller_adr_widens_the_ranges_in_the_real_physics():
    """The scripted Reach controller succeeds in most worlds, so ADR's ranges grow from the
    nominal point; none passes its hard limit."""
    from manip_rl.envs.scripted import scripted_policy

    s = adr.AdrSettings.from_dict({"buffer_size": 3, "boundary_prob": 1.0}, "reach")
    env = adr_env.AdrWrapper(gym.make("manip_rl/PandaReach-v0"), s, seed=1)
    ctrl = scripted_policy(env)
    state = adr.AdrState(s)
    actions = []
    for ep in range(3 * 3 * len(state.boundaries)):
        obs, info = env.reset(seed=ep)
        done = False
        while not done:
            obs, _, term, trunc, info = env.step(ctrl(obs))
            done = term or trunc
        boundary, value = info["adr_boundary"]
        u = state.record(boundary, value, info["is_success"])
        if u is not None:
            actions.append(u.action)
            if u.action != "keep":
                env.adr_set_ranges(state.ranges)
    env.close()
    assert actions.count("widen") >= 10, actions
    widened = [n for n, (lo, hi) in state.ranges.items() if (lo, hi) != (1.0, 1.0)]
    assert len(widened) >= 4, state.ranges
    for p in s.params:
        lo, hi = state.ranges[p.name]
        assert p.hard_low <= lo <= p.nominal <= hi <= p.hard_high
    assert state.nats_per_dimension() > adr.AdrState(s).nats_per_dimension()
