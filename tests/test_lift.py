"""PandaLift, the task added as one module and its YAML: lifting and holding is what succeeds,
its scripted controller lifts, its dense terms add up, and it trains and exports end to end."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import manip_rl  # noqa: F401  (registers the envs)
from manip_rl import policy_io
from manip_rl.envs import registry
from manip_rl.envs.tasks.lift import HOLD_STEPS, LIFT_HEIGHT, TASK

SPARSE, DENSE = "manip_rl/PandaLift-v0", "manip_rl/PandaLiftDense-v0"


def _scripted_episode(env, seed: int) -> tuple[list[dict], float]:
    ctrl = registry.scripted_controller(env)
    obs, _ = env.reset(seed=seed)
    infos, truncated = [], False
    while not truncated:
        obs, _, _, truncated, info = env.step(ctrl(obs))
        infos.append(info | {"cube": env.unwrapped.object_position})
    return infos, float(info["is_success"])


def test_registered_from_its_spec_ee_delta_and_gripper_by_default():
    assert registry.get("PandaLift") is TASK and TASK.env_ids == (SPARSE, DENSE)
    env = gym.make(SPARSE)
    base = env.unwrapped
    assert base.action_spec.mode == policy_io.EE_DELTA and base.action_spec.gripper
    assert env.action_space.shape == (4,) and env.spec.max_episode_steps == 100
    assert base.layout.flat_dim == 38  # Push's fields with 4-value previous actions
    obs, _ = env.reset(seed=0)
    # The goal: straight above the cube's resting centre, 10 cm + the threshold.
    np.testing.assert_allclose(obs["desired_goal"][:2], obs["achieved_goal"][:2], atol=1e-6)
    assert obs["desired_goal"][2] - obs["achieved_goal"][2] == pytest.approx(0.15, abs=1e-6)
    env.close()
    assert gym.make(SPARSE, action_mode="joint_delta").action_space.shape == (8,)


@pytest.mark.parametrize("mode", [policy_io.EE_DELTA, policy_io.JOINT_DELTA])
def test_the_scripted_controller_lifts_and_holds_on_most_seeds(mode):
    env = gym.make(SPARSE, action_mode=mode)
    wins = 0
    for seed in range(10):
        infos, success = _scripted_episode(env, seed)
        wins += int(success)
        if success:
            rest = float(env.unwrapped.model.geom_size[env.unwrapped.ids.object_geom, 2])
            first = next(i for i, info in enumerate(infos) if info["is_success"])
            # Success only after HOLD_STEPS steps lifted and grasped, the bottom 10 cm up.
            held = infos[first - HOLD_STEPS + 1 : first + 1]
            assert len(held) == HOLD_STEPS
            assert all(i["cube"][2] - rest >= LIFT_HEIGHT for i in held)
            assert all(i["is_grasped"] == 1.0 for i in held)
            assert not infos[first - 1]["is_success"]
    env.close()
    assert wins >= 8, f"{mode}: {wins}/10"  # measured 10/10 nominal in either mode


def test_a_cube_raised_without_a_grasp_is_no_success():
    """The hold counts: a cube put at the goal falls, and a released one stops counting."""
    env = gym.make(SPARSE)
    base = env.unwrapped
    obs, _ = env.reset(seed=1)
    o = base.ids.object_qpos
    base.data.qpos[o : o + 3] = base.goal  # teleported up, the gripper far above it: no grasp
    for _ in range(HOLD_STEPS + 5):
        obs, reward, _, _, info = env.step(np.zeros(4, np.float32))
        assert not info["is_success"]
    assert base.object_position[2] < 0.05  # it fell back to the table
    assert reward == -1.0
    # Scripted to success, then open the gripper: success ends with the hold.
    ctrl = registry.scripted_controller(env)
    obs, _ = env.reset(seed=2)
    for _ in range(100):
        obs, reward, _, truncated, info = env.step(ctrl(obs))
        if info["is_success"]:
            break
    assert info["is_success"] and reward == 0.0
    for _ in range(3):
        obs, _, _, _, info = env.step(np.array([0, 0, 0, 1.0], np.float32))  # open
    assert not info["is_success"]
    env.close()


def test_dense_terms_are_the_specs_scaled_terms_and_add_up():
    env = gym.make(DENSE, randomization="default")
    ctrl = registry.scripted_controller(env)
    scales = TASK.reward_scales
    assert set(scales) == {"reach", "grasp", "lift"} and sum(scales.values()) == 1.0
    obs, _ = env.reset(seed=0)  # a seed the scripted controller lifts under randomization
    rng = np.random.default_rng(0)
    seen_grasp = seen_lift = False
    for i in range(100):
        action = ctrl(obs) if i >= 10 else rng.uniform(-1, 1, 4).astype(np.float32)
        obs, reward, _, truncated, info = env.step(action)
        terms = info["reward_terms"]
        assert set(terms) == set(scales)
        assert sum(terms.values()) == pytest.approx(reward, abs=1e-6)
        recomputed = env.unwrapped.compute_reward(obs["achieved_goal"], obs["desired_goal"], info)
        assert float(recomputed) == pytest.approx(reward, abs=1e-6)
        for name, value in terms.items():
            assert 0.0 <= value <= scales[name] + 1e-9
        assert terms["grasp"] == scales["grasp"] * info["is_grasped"]
        seen_grasp |= terms["grasp"] > 0
        seen_lift |= terms["lift"] > 0.4 * scales["lift"]
    assert seen_grasp and seen_lift
    # Batched, as HER relabels: one call for many goals.
    batch = env.unwrapped.compute_reward(
        np.stack([obs["achieved_goal"]] * 3), np.stack([obs["desired_goal"]] * 3), [info] * 3
    )
    np.testing.assert_allclose(batch, reward, atol=1e-6)
    env.close()


def test_ppo_trains_exports_and_acts_on_lift_end_to_end(tmp_path, capsys):
    """A smoke run, not a learning test: `manip-rl train --task PandaLift` and `export`."""
    from manip_rl.cli import main
    from manip_rl.export import load_policy

    run = str(tmp_path / "lift")
    args = ["train", "--task", "PandaLift", "--run-dir", run, "--no-progress"]
    for kv in ("total_timesteps=1000", "n_envs=2", "vec_env=dummy", "hyperparams.n_steps=250",
               "hyperparams.batch_size=250", "eval.freq=1000", "eval.episodes=1"):  # fmt: skip
        args += ["--set", kv]
    assert main(args) == 0
    out = str(tmp_path / "lift.pt")
    assert main(["export", run, "--out", out, "--episodes", "1"]) == 0
    policy = load_policy(out)
    assert (policy.task, policy.env_id, policy.action_spec.mode) == ("lift", DENSE, "ee_delta")
    env = policy.make_env(randomization="default")
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        action = policy.act(obs)
        assert action.shape == (4,) and np.all(np.abs(action) <= 1.0)
        obs, *_ = env.step(action)
    env.close()
