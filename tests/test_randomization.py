"""Domain randomization: it really changes the simulated physics, restores the nominal model, is
reproducible, and refuses configurations that make no sense."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest

import manip_rl  # noqa: F401
from manip_rl import policy_io
from manip_rl.envs.randomization import (
    PHYSICS_KEYS,
    RandomizationConfig,
    RandomizationConfigError,
    load_config,
)
from manip_rl.envs.scene import build_model

DEFAULT = load_config("default", "push").to_dict()


def _model_fields(env):
    m, ids = env.unwrapped.model, env.unwrapped.ids
    return {
        "link_mass": m.body_mass[ids.arm_bodies].copy(),
        "object_mass": m.body_mass[ids.object_body].copy(),
        "friction": m.geom_friction[:, 0].copy(),
        "damping": m.dof_damping.copy(),
        "kp": m.actuator_gainprm[:, 0].copy(),
        "bias": m.actuator_biasprm[:, 1].copy(),
        "size": m.geom_size[ids.object_geom].copy(),
        "gravity": m.opt.gravity.copy(),
    }


def test_randomization_changes_masses_frictions_and_gains_across_resets():
    env = gym.make("manip_rl/PandaPush-v0", randomization="default")
    draws = []
    for seed in range(3):
        _, info = env.reset(seed=seed)
        draws.append(_model_fields(env))
        assert "randomization" in info and "link_mass" in info["randomization"]
    for key in draws[0]:
        assert not np.allclose(draws[0][key], draws[1][key]), key
    # A position servo is gain kp and bias -kp: both must move together.
    arm = env.unwrapped.ids.arm_actuators
    np.testing.assert_allclose(draws[0]["kp"][arm], -draws[0]["bias"][arm])


def test_reported_sample_matches_what_was_written_into_the_model():
    env = gym.make("manip_rl/PandaPush-v0", randomization="default")
    _, info = env.reset(seed=5)
    nominal, ids = build_model("push")
    sample = info["randomization"]
    m = env.unwrapped.model
    np.testing.assert_allclose(
        m.body_mass[ids.arm_bodies], nominal.body_mass[ids.arm_bodies] * sample["link_mass"]
    )
    np.testing.assert_allclose(
        m.dof_damping[ids.arm_dof], nominal.dof_damping[ids.arm_dof] * sample["joint_damping"]
    )
    np.testing.assert_allclose(m.opt.gravity, nominal.opt.gravity + sample["gravity"])
    # The cube rests on the table at its randomized size.
    assert env.unwrapped.object_position[2] == pytest.approx(m.geom_size[ids.object_geom, 2])


def test_one_action_sequence_gives_different_trajectories_under_randomization():
    actions = np.random.default_rng(0).uniform(-1, 1, (30, 8))
    env = gym.make("manip_rl/PandaPush-v0", randomization={"physics": DEFAULT["physics"]})
    finals = []
    for seed in (0, 1):
        env.reset(seed=seed)
        base = env.unwrapped
        # Same initial state and goal for both: only the physics differs.
        base.data.qpos[:] = base.model.qpos0
        base.data.qvel[:] = 0
        import mujoco

        mujoco.mj_forward(base.model, base.data)
        base._sensor_history.clear()
        base._sensor_history.append(base._measure())
        base._observation()
        for a in actions:
            env.step(a)
        finals.append(base.data.qpos[base.ids.arm_qpos].copy())
    assert np.abs(finals[0] - finals[1]).max() > 1e-3


def test_randomization_off_gives_the_nominal_model_and_restore_undoes_a_draw():
    nominal, _ = build_model("push")
    off = gym.make("manip_rl/PandaPush-v0", randomization=None)
    off.reset(seed=0)
    m = off.unwrapped.model
    for field in ("body_mass", "geom_friction", "dof_damping", "actuator_gainprm", "geom_size"):
        np.testing.assert_array_equal(getattr(m, field), getattr(nominal, field))
    on = gym.make("manip_rl/PandaPush-v0", randomization="default")
    on.reset(seed=0)
    assert not np.array_equal(on.unwrapped.model.body_mass, nominal.body_mass)
    on.unwrapped._randomizer.restore()
    for field in (
        "body_mass",
        "body_inertia",
        "geom_friction",
        "dof_damping",
        "actuator_gainprm",
        "actuator_biasprm",
        "geom_size",
        "geom_rbound",
    ):
        np.testing.assert_array_equal(getattr(on.unwrapped.model, field), getattr(nominal, field))
    np.testing.assert_array_equal(on.unwrapped.model.opt.gravity, nominal.opt.gravity)


def test_draws_never_compound_across_resets():
    env = gym.make(
        "manip_rl/PandaPush-v0",
        randomization={
            "physics": {"link_mass": {"dist": "uniform", "op": "scale", "range": [1.4, 1.5]}}
        },
    )
    nominal, ids = build_model("push")
    for seed in range(5):
        env.reset(seed=seed)
        ratio = env.unwrapped.model.body_mass[ids.arm_bodies] / nominal.body_mass[ids.arm_bodies]
        assert ((ratio >= 1.4 - 1e-9) & (ratio <= 1.5 + 1e-9)).all()


def test_observation_latency_delays_what_the_policy_sees():
    env = gym.make(
        "manip_rl/PandaReach-v0", randomization={"observation_latency": [2, 2]}
    ).unwrapped
    env.reset(seed=0)
    seen, true = [], []
    for a in np.random.default_rng(0).uniform(-1, 1, (6, 7)):
        seen.append(env.step(a)[0]["observation"][:7])
        true.append(env.data.qpos[env.ids.arm_qpos] + policy_io.SIM_JOINT_OFFSETS)
    # With a 2-step delay, step t shows the joint positions the physics had at step t-2.
    for t in range(2, 6):
        np.testing.assert_allclose(seen[t], true[t - 2], atol=1e-6)
    assert not np.allclose(seen[5], true[5], atol=1e-3)


def test_action_latency_applies_the_command_later():
    env = gym.make("manip_rl/PandaReach-v0", randomization={"action_latency": 1}).unwrapped
    env.reset(seed=0)
    q0 = env.data.ctrl[env.ids.arm_actuators].copy()
    env.step(np.ones(7))
    np.testing.assert_allclose(env.data.ctrl[env.ids.arm_actuators], q0)  # still the hold command
    env.step(np.zeros(7))
    assert (env.data.ctrl[env.ids.arm_actuators] > q0 + 0.05).all()  # now the first action lands


def test_observation_noise_and_bias_perturb_sensors():
    env = gym.make(
        "manip_rl/PandaPush-v0",
        randomization={
            "observation_noise": {"object_pos": 0.01},
            "observation_bias": {"object_pos": 0.02},
        },
    )
    obs, info = env.reset(seed=0)
    true = env.unwrapped.object_position
    assert np.abs(obs["achieved_goal"] - true).max() > 1e-4
    assert "bias_object_pos" in info["randomization"]


@pytest.mark.parametrize(
    "config, key",
    [
        (
            {"physics": {"link_mas": {"dist": "uniform", "op": "scale", "range": [0.5, 1.5]}}},
            "link_mas",
        ),
        ({"physic": {}}, "physic"),
        (
            {"physics": {"friction": {"dist": "uniform", "op": "scale", "range": [1.3, 0.7]}}},
            "physics.friction.range",
        ),
        (
            {"physics": {"friction": {"dist": "uniform", "op": "scale", "range": [1.0, 1.0]}}},
            "physics.friction.range",
        ),
        (
            {"physics": {"link_mass": {"dist": "uniform", "op": "set", "range": [-1.0, 2.0]}}},
            "physics.link_mass",
        ),
        (
            {"physics": {"object_mass": {"dist": "uniform", "op": "scale", "range": [-0.5, 1.5]}}},
            "physics.object_mass",
        ),
        (
            {
                "physics": {
                    "joint_damping": {"dist": "loguniform", "op": "scale", "range": [0.0, 3.0]}
                }
            },
            "physics.joint_damping.range",
        ),
        ({"physics": {"gravity": {"dist": "normal", "op": "add", "mean": 0.0}}}, "physics.gravity"),
        (
            {"physics": {"friction": {"dist": "gaussian", "op": "scale", "range": [0.7, 1.3]}}},
            "physics.friction.dist",
        ),
        ({"observation_noise": {"joint_position": 0.1}}, "observation_noise.joint_position"),
        ({"observation_noise": {"joint_pos": -0.1}}, "observation_noise.joint_pos"),
        ({"action_latency": [2, 1]}, "action_latency"),
        ({"observation_latency": [-1, 1]}, "observation_latency"),
        ({"action_noise": "lots"}, "action_noise"),
    ],
)
def test_bad_configurations_are_refused_naming_the_key(config, key):
    with pytest.raises(RandomizationConfigError, match=key.replace(".", r"\.")):
        RandomizationConfig.from_dict(config)


def test_missing_randomization_file_is_refused_with_what_to_pass(tmp_path):
    with pytest.raises(RandomizationConfigError, match="does not exist"):
        gym.make("manip_rl/PandaPush-v0", randomization=str(tmp_path / "nope.yaml"))


def test_shipped_defaults_parse_and_cover_the_physics_the_issue_names():
    for task in ("reach", "push", "pick_place"):
        cfg = load_config("default", task)
        assert cfg.max_action_latency >= 1 and cfg.max_observation_latency >= 1
        assert cfg.observation_noise and cfg.action_noise > 0
    push = load_config("default", "push")
    expected = set(PHYSICS_KEYS) - {"frictionloss"}  # off by default: see push.yaml
    assert expected <= set(push.physics)
    roundtrip = RandomizationConfig.from_dict(copy.deepcopy(push.to_dict()))
    assert roundtrip == push


@pytest.mark.parametrize(
    "text, says",
    [
        ("", "is empty"),
        ("# only a comment\n", "is empty"),
        ("physics: heavy\n", "physics: expected a mapping"),
        ("physics:\n  link_mass: {dist: uniform, range: [0.5, 1.5]\n", "line 3"),
    ],
    ids=["empty", "comment_only", "physics_not_a_mapping", "bad_yaml"],
)
def test_bad_randomization_files_are_refused_naming_the_file(tmp_path, text, says):
    path = tmp_path / "ranges.yaml"
    path.write_text(text)
    with pytest.raises(RandomizationConfigError, match=says) as e:
        gym.make("manip_rl/PandaPush-v0", randomization=str(path))
    assert "ranges.yaml" in str(e.value)
    if says == "is empty":
        assert "randomization: none" in str(e.value), "says how to turn it off explicitly"
