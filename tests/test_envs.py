"""The registered Panda tasks: API conformance, rewards, determinism and physical solvability."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import manip_rl  # noqa: F401  (registers the envs)
from manip_rl import policy_io
from manip_rl.envs import env_ids, registry
from manip_rl.envs.scripted import scripted_policy

ALL_IDS = env_ids()


def test_registry_has_every_task_in_both_reward_variants():
    assert set(ALL_IDS) == {f"manip_rl/{t}{v}-v0" for t in registry.names() for v in ("", "Dense")}
    assert {"PandaReach", "PandaPush", "PandaPickPlace"} <= set(registry.names())
    for env_id in ALL_IDS:
        assert env_id in gym.registry
        spec = gym.spec(env_id)
        task = registry.get(env_id)
        assert spec.max_episode_steps == task.episode_steps
        assert spec.kwargs["reward_type"] == ("dense" if "Dense" in env_id else "sparse")


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_gymnasium_and_sb3_env_checkers_pass(env_id):
    env = gym.make(env_id, randomization="default")
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=True)
    env.close()


@pytest.mark.parametrize(
    "env_id",
    [
        "manip_rl/PandaReachDense-v0",
        "manip_rl/PandaPushDense-v0",
        "manip_rl/PandaPush-v0",
        "manip_rl/PandaPickPlaceDense-v0",
    ],
)
def test_reward_terms_add_up_to_the_reward_and_match_compute_reward(env_id):
    env = gym.make(env_id, randomization="default")
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(30):
        obs, reward, _, _, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
        terms = info["reward_terms"]
        assert len(terms) >= 1
        assert sum(terms.values()) == pytest.approx(reward, abs=1e-6)
        recomputed = env.unwrapped.compute_reward(obs["achieved_goal"], obs["desired_goal"], info)
        assert float(recomputed) == pytest.approx(reward, abs=1e-6)
    if env_id == "manip_rl/PandaReachDense-v0":
        assert reward < 0  # minus a distance: strictly negative away from the goal
    if env_id == "manip_rl/PandaPushDense-v0":
        assert set(terms) == {"approach", "place", "success"}
        assert 0 < reward < 2 / 3  # random actions: no success
    if env_id == "manip_rl/PandaPickPlaceDense-v0":
        assert set(terms) == {"reach", "grasp", "place", "success"}
        assert info["is_grasped"] in (0.0, 1.0)


def test_push_dense_reward_stages():
    """Hand-placed states: the pushing pose beats the wrong side, pushing it home pays most."""
    env = gym.make("manip_rl/PandaPushDense-v0", action_mode="ee_delta")
    base = env.unwrapped
    cube, goal = np.array([0.5, 0.0, 0.025], np.float32), np.array([0.65, 0.0, 0.025], np.float32)
    pose = np.array([0.5 - 0.04, 0.0, 0.025 + 0.045], np.float32)  # behind, seen from the goal

    def reward(ee, achieved=cube):
        return float(base.compute_reward(achieved, goal, {"ee_pos": np.asarray(ee, np.float32)}))

    at_pose, wrong_side = reward(pose), reward(pose + [0.08, 0, 0])
    high_above = reward(pose + [0, 0, 0.2])
    assert at_pose > wrong_side > high_above
    # The place term grows as the cube nears the goal.
    halfway = np.array([0.58, 0.0, 0.025], np.float32)
    assert reward(halfway - [0.04, 0, -0.045], halfway) > at_pose
    assert reward(goal - [0.04, 0, -0.045] + [0.01, 0, 0], goal) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="ee_pos"):
        base.compute_reward(cube, goal, None)


@pytest.mark.parametrize(
    "env_id",
    ["manip_rl/PandaReach-v0", "manip_rl/PandaPushDense-v0", "manip_rl/PandaPickPlaceDense-v0"],
)
def test_vectorized_compute_reward_equals_per_sample(env_id):
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    achieved, desired, infos = [], [], []
    rng = np.random.default_rng(1)
    for _ in range(40):
        obs, _, _, _, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
        achieved.append(obs["achieved_goal"])
        # HER relabels with goals drawn from elsewhere in the episode.
        desired.append(obs["achieved_goal"] + rng.normal(0, 0.05, 3).astype(np.float32))
        infos.append(info)
    achieved, desired = np.array(achieved), np.array(desired)
    base = env.unwrapped
    batch = base.compute_reward(achieved, desired, np.array(infos))
    single = [
        base.compute_reward(a, d, i) for a, d, i in zip(achieved, desired, infos, strict=True)
    ]
    assert batch.shape == (40,)
    np.testing.assert_allclose(batch, single, atol=1e-6)
    if base.reward_type == "sparse":
        assert set(np.unique(batch)) <= {0.0, -1.0}
        assert (batch == 0).any() and (batch == -1).any()  # the noise above straddles 5 cm


def _rollout(env, seed, actions):
    obs, info = env.reset(seed=seed)
    trace = [np.concatenate([obs["observation"], obs["desired_goal"]])]
    for a in actions:
        obs, r, *_ = env.step(a)
        trace.append(np.concatenate([obs["observation"], obs["desired_goal"], [r]]))
    return np.concatenate(trace), info


def test_same_seed_gives_identical_trajectories_with_randomization_on():
    actions = np.random.default_rng(0).uniform(-1, 1, (40, 8))
    a = _rollout(gym.make("manip_rl/PandaPushDense-v0", randomization="default"), 7, actions)[0]
    b = _rollout(gym.make("manip_rl/PandaPushDense-v0", randomization="default"), 7, actions)[0]
    c = _rollout(gym.make("manip_rl/PandaPushDense-v0", randomization="default"), 8, actions)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_time_limit_truncates_and_never_terminates():
    env = gym.make("manip_rl/PandaReach-v0")
    env.reset(seed=0)
    for t in range(1, 51):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        assert not terminated
        assert truncated == (t == 50)


def test_wrong_action_shape_is_refused_with_the_expected_shape():
    env = gym.make("manip_rl/PandaPush-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\(8,\)"):
        env.step(np.zeros(7))


def test_non_finite_action_holds_the_arm():
    env = gym.make("manip_rl/PandaReach-v0").unwrapped
    env.reset(seed=0)
    q0 = env.data.qpos[env.ids.arm_qpos].copy()
    env.step(np.full(7, np.nan))
    ctrl = env.data.ctrl[env.ids.arm_actuators]
    np.testing.assert_allclose(ctrl, q0, atol=0.01)  # targets = measured position (+ noise-free)


def test_step_reports_state_after_physics():
    """The observation is the state the physics reached, not the one before the last substep."""
    env = gym.make("manip_rl/PandaReach-v0").unwrapped
    env.reset(seed=0)
    env.step(np.ones(7))
    import mujoco

    d = env.data
    ee_now = d.site_xpos[env.ids.ee_site].copy()
    mujoco.mj_forward(env.model, d)
    np.testing.assert_allclose(ee_now, d.site_xpos[env.ids.ee_site], atol=1e-9)


@pytest.mark.parametrize(
    "env_id", ["manip_rl/PandaReach-v0", "manip_rl/PandaPush-v0", "manip_rl/PandaPickPlace-v0"]
)
def test_scripted_controller_solves_the_task(env_id):
    """Not learned: shows the task is physically solvable from its initial states."""
    env = gym.make(env_id)
    policy = scripted_policy(env)
    successes = []
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(policy(obs))
            done = terminated or truncated
        successes.append(info["is_success"])
    threshold = 1.0 if "Reach" in env_id else 0.8
    assert np.mean(successes) >= threshold, successes


# Scripted Push episodes (randomized, seeds 100+) in which MuJoCo 3.14-4.0's implicitfast
# integrator launched the cube, at 5 to 177,000 m/s; 3.13 and earlier never did.
LAUNCH_SEEDS = (104, 106, 107, 109, 119, 131)


def test_pushing_never_launches_the_cube():
    """The physics the policies learn on: the scripted pushes move the cube at most at pushing
    speed (under 2 m/s over any 40 ms step), in the episodes where implicitfast blew it up."""
    from manip_rl.episodes import run_episodes

    env = gym.make("manip_rl/PandaPushDense-v0", action_mode="ee_delta", randomization="default")
    controller = registry.scripted_controller(env)
    data = env.unwrapped.data
    fastest = {}
    for seed in LAUNCH_SEEDS:
        cube: list[np.ndarray] = []  # the cube's position after the reset and after each step

        def record(_, __, cube=cube):
            cube.append(data.qpos[9:12].copy())

        (ep,) = run_episodes(
            [env], lambda obs: [controller(obs[0])], 1, seed, on_reset=record, on_step=record
        )
        assert not ep.info.get("physics_unstable"), seed
        fastest[seed] = float(np.linalg.norm(np.diff(cube, axis=0), axis=1).max()) / 0.04
    assert max(fastest.values()) < 2.0, fastest


def test_ee_delta_mode_moves_the_tcp_by_the_commanded_displacement_direction():
    env = gym.make("manip_rl/PandaReach-v0", action_mode="ee_delta")
    assert env.action_space.shape == (3,)
    obs, _ = env.reset(seed=0)
    start = env.unwrapped.ee_position
    for _ in range(5):
        obs, *_ = env.step(np.array([0.0, 1.0, 0.0]))
    moved = env.unwrapped.ee_position - start
    assert moved[1] > 0.05  # +y commanded
    assert abs(moved[0]) < 0.3 * moved[1] and abs(moved[2]) < 0.3 * moved[1]


def test_ee_delta_pressing_down_keeps_the_fingertips_off_the_table():
    """MuJoCo contacts: a policy that pushes down for 2 s never drags the fingers on the table."""

    env = gym.make("manip_rl/PandaPush-v0", action_mode="ee_delta")
    env.reset(seed=0, options={"object_xy": [0.4, 0.25], "goal": [0.5, -0.2, 0.025]})
    base = env.unwrapped
    m, d = base.model, base.data
    fingers = {
        g for g in range(m.ngeom) if "finger" in m.body(m.geom_bodyid[g]).name and m.geom_contype[g]
    }
    for _ in range(50):
        env.step(np.array([0.2, -0.2, -1.0, -1.0]))
        touching = {d.contact[i].geom1 for i in range(d.ncon)} | {
            d.contact[i].geom2 for i in range(d.ncon)
        }
        table_pairs = [
            (d.contact[i].geom1, d.contact[i].geom2)
            for i in range(d.ncon)
            if base.ids.table_geom in (d.contact[i].geom1, d.contact[i].geom2)
        ]
        assert not any(set(pair) & fingers for pair in table_pairs), touching
    assert base.ee_position[2] == pytest.approx(policy_io.EE_Z_MIN, abs=0.01)
    assert base.ee_position[2] < 0.1  # it did go down, to the floor


@pytest.mark.parametrize("gain", [policy_io.EE_POSTURE_GAIN, 0.0])
def test_ee_delta_posture_pull_keeps_the_joints_off_their_limits(gain):
    """MuJoCo: 5 episodes of full-scale TCP commands sweeping back and forth, to the edge of the
    reachable space. With the null-space pull towards home every joint stays 0.1 rad inside its
    limits; without it (gain 0) the 4 free joints drift onto a limit, where the TCP stalls."""
    import dataclasses

    env = gym.make("manip_rl/PandaPush-v0", action_mode="ee_delta")
    base = env.unwrapped
    base.action_spec = dataclasses.replace(base.action_spec, ee_posture_gain=gain)
    lower, upper = policy_io.PANDA_JOINT_LOWER, policy_io.PANDA_JOINT_UPPER
    margins = []
    for ep in range(5):
        env.reset(seed=ep)
        for t in range(100):
            sweep = np.sign(np.sin(t / 10 + ep + np.arange(3)))
            obs, *_ = env.step(np.array([*sweep, -1.0]))
            q = obs["observation"][:7].astype(np.float64)
            margins.append(min((q - lower).min(), (upper - q).min()))
    if gain > 0:
        assert min(margins) > 0.1, min(margins)
    else:
        assert min(margins) < 0.05, min(margins)  # the failure the pull prevents


def test_rgb_array_rendering():
    env = gym.make("manip_rl/PandaPush-v0", render_mode="rgb_array", width=64, height=48)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    assert frame.std() > 5  # a scene, not a blank image
    env.close()


def test_pick_place_dense_reward_stages():
    """Hand-placed states: at the grasping pose beats far off, holding beats not, holding it
    nearer the goal pays more, success pays 1."""
    env = gym.make("manip_rl/PandaPickPlaceDense-v0", action_mode="ee_delta")
    base = env.unwrapped
    cube, goal = np.array([0.5, 0.0, 0.025], np.float32), np.array([0.5, 0.1, 0.2], np.float32)
    pose = cube + np.array([0, 0, 0.045], np.float32)

    def reward(ee, grasped, achieved=cube):
        info = {"ee_pos": np.asarray(ee, np.float32), "is_grasped": np.float32(grasped)}
        return float(base.compute_reward(achieved, goal, info))

    assert reward(pose, 0) > reward(pose + [0.1, 0, 0], 0) > reward(pose + [0.3, 0, 0.2], 0)
    assert reward(pose, 1) > reward(pose, 0) + 0.2  # the grasp term: 1/4
    lifted = np.array([0.5, 0.05, 0.12], np.float32)
    assert reward(lifted + [0, 0, 0.045], 1, lifted) > reward(pose, 1)
    # Dragged (not held) nearer the goal earns no place term.
    assert reward(lifted + [0, 0, 0.045], 0, lifted) == pytest.approx(reward(pose, 0), abs=1e-6)
    assert reward(goal + [0, 0, 0.045], 1, goal) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="is_grasped"):
        base.compute_reward(cube, goal, None)


def test_grasp_is_read_from_both_fingers_touching_the_cube():
    """MuJoCo contacts: no grasp with the gripper open above the cube; a grasp while the scripted
    controller carries it; none again after the fingers open."""
    env = gym.make("manip_rl/PandaPickPlaceDense-v0")
    policy = scripted_policy(env)
    obs, _ = env.reset(seed=0, options={"goal": (0.5, 0.0, 0.2)})
    assert not env.unwrapped.is_grasped()
    flags = []
    for _ in range(60):
        obs, _, _, _, info = env.step(policy(obs))
        flags.append(info["is_grasped"])
    assert flags[0] == 0.0 and flags[-1] == 1.0 and info["is_success"] == 1.0
    assert env.unwrapped.object_position[2] > 0.15  # lifted: only a grasp does that
    for _ in range(15):  # open the fingers and hold still
        obs, _, _, _, info = env.step(np.append(np.zeros(7), 1.0))
    assert info["is_grasped"] == 0.0


def test_pick_place_puts_half_the_goals_in_the_air():
    env = gym.make("manip_rl/PandaPickPlace-v0")
    heights = [env.reset(seed=s)[0]["desired_goal"][2] for s in range(40)]
    in_air = np.mean(np.array(heights) > 0.03)
    assert 0.25 < in_air < 0.75


def test_grasped_starts_put_the_cube_in_the_closed_fingers_above_the_table():
    """``grasped_start=1``: every episode starts with both fingers on the cube (MuJoCo contacts),
    at a random height, and lifting the TCP with the gripper closed carries the cube up."""
    env = gym.make(
        "manip_rl/PandaPickPlaceDense-v0",
        action_mode="ee_delta",
        randomization="default",
        grasped_start=1.0,
    )
    lifts = []
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        u = env.unwrapped
        assert u.is_grasped(), seed
        z0, ee0 = u.object_position[2], u.ee_position[2]
        lifts.append(z0)
        for _ in range(8):  # up at half speed, gripper closed
            obs, _, _, _, info = env.step(np.array([0.0, 0.0, 0.5, -1.0], np.float32))
        assert info["is_grasped"] == 1.0, seed
        rise, ee_rise = u.object_position[2] - z0, u.ee_position[2] - ee0
        assert rise > 0.01 and abs(rise - ee_rise) < 0.005, (seed, rise, ee_rise)  # carried
    assert np.ptp(lifts) > 0.05  # the start height varies


def test_grasped_start_zero_leaves_the_episodes_unchanged_and_bad_values_are_refused():
    plain = gym.make("manip_rl/PandaPickPlaceDense-v0", randomization="default")
    off = gym.make("manip_rl/PandaPickPlaceDense-v0", randomization="default", grasped_start=0.0)
    for seed in range(3):
        a, _ = plain.reset(seed=seed)
        b, _ = off.reset(seed=seed)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    half = gym.make("manip_rl/PandaPickPlaceDense-v0", grasped_start=0.5)
    grasped = []
    for seed in range(30):
        half.reset(seed=seed)
        grasped.append(half.unwrapped.is_grasped())
    assert 0.2 < np.mean(grasped) < 0.8
    # Episodes with a given object position never start grasped (evaluation scenes).
    half.reset(seed=0, options={"object_xy": (0.5, 0.0)})
    assert not half.unwrapped.is_grasped()
    with pytest.raises(ValueError, match=r"grasped_start=1.5.*\[0, 1\]"):
        gym.make("manip_rl/PandaPickPlaceDense-v0", grasped_start=1.5)


def test_a_diverging_physics_state_ends_the_episode_and_says_so():
    """MuJoCo resets a diverging state to the model's defaults and steps on (seen once in 40
    shipped-PickPlace episodes on mujoco 4.0.0: "Nan, Inf or huge value in QVEL at DOF 9");
    the episode must not go on from that silent reset."""
    env = gym.make("manip_rl/PandaPush-v0")
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(np.zeros(env.action_space.shape))
    assert not truncated and "physics_unstable" not in info
    base = env.unwrapped
    base.data.qvel[base.ids.object_dof] = 1e12  # beyond MuJoCo's mjMAXVAL: it resets the state
    _, _, terminated, truncated, info = env.step(np.zeros(env.action_space.shape))
    assert truncated and not terminated
    assert info["physics_unstable"] is True and info["is_success"] == 0.0
    env.close()


def test_make_vec_without_a_backend_gives_the_cpu_env_in_a_sync_vector_env():
    """Every id has a vector entry point (the batched backend); Gymnasium then picks it for a
    plain ``gym.make_vec(ID, num_envs=N)``, which must stay the CPU env, with its kwargs."""
    from manip_rl.envs.tasks.push import PandaPushEnv

    envs = gym.make_vec("manip_rl/PandaPushDense-v0", num_envs=2, randomization=None)
    assert isinstance(envs, gym.vector.SyncVectorEnv)  # not Warp worlds: no kernels compiled
    base = envs.envs[0].unwrapped
    assert type(base) is PandaPushEnv
    assert base.reward_type == "dense" and base.randomization_config is None
    assert envs.envs[0].spec.max_episode_steps == registry.get("PandaPush").episode_steps
    obs, _ = envs.reset(seed=3)
    _, reward, *_ = envs.step(np.zeros((2, 8), np.float32))
    assert reward.shape == (2,) and np.all(reward != np.round(reward))  # dense: not 0 / -1
    envs.close()
    with pytest.raises(ValueError, match=r"device='cuda' applies to backend='warp'"):
        gym.make_vec("manip_rl/PandaPush-v0", num_envs=2, device="cuda")
