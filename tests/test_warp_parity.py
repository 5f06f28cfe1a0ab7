"""The batched MuJoCo Warp env (Warp's CPU device) against the CPU env, step for step.

Both get the same actions (the task's scripted controller, driven by the CPU env's
observations) and the batched env draws its noise from each world's own generator
(``noise="numpy"``), so every difference is the physics: MuJoCo Warp in float32 against MuJoCo's
CPU solver in float64. Tolerances (measured, docs/warp.md): without contact both agree to about
1e-5 for a whole episode; contact (a cube resting on the table, the fingers pushing it) makes
float32 differences grow, so the default run compares the cube tasks over their first steps, and
the ``slow`` run whole episodes with the looser contact tolerances.

Kernels compile once per scene on the first step (about a minute each on this machine's CPU,
then cached in ~/.cache/warp).
"""

import gymnasium as gym
import numpy as np
import pytest
import torch

pytest.importorskip("mujoco_warp", reason="needs the warp extra (pip install -e .[warp])")

import manip_rl  # noqa: E402,F401  (registers the envs)
from manip_rl.envs import registry  # noqa: E402

pytestmark = pytest.mark.warp
N_WORLDS = 2
SEED = 11
POSITIONS = ("joint_pos", "ee_pos", "gripper_opening", "object_pos", "object_rel_pos")


def _run(task: str, randomization, steps: int, dense: bool = True) -> dict:
    """Step both backends ``steps`` times; per field, the largest difference seen, and how often
    success, reward and the grasp flag agree."""
    spec = registry.get(task)
    env_id = spec.dense_env_id if dense else spec.env_id
    batched = gym.make_vec(
        env_id, num_envs=N_WORLDS, vectorization_mode="vector_entry_point", backend="warp",
        device="cpu", randomization=randomization, noise="numpy",
    )  # fmt: skip
    cpu = [gym.make(env_id, randomization=randomization) for _ in range(N_WORLDS)]
    try:
        obs, info = batched.reset(seed=SEED)
        cpu_obs = [env.reset(seed=SEED + i)[0] for i, env in enumerate(cpu)]
        slices = cpu[0].unwrapped.obs_slices
        for i in range(N_WORLDS):  # a reset with seed s+i is the CPU env's reset with s+i
            np.testing.assert_allclose(
                obs["observation"][i].numpy(), cpu_obs[i]["observation"], atol=1e-6
            )
            np.testing.assert_allclose(obs["desired_goal"][i].numpy(), cpu_obs[i]["desired_goal"])
        controllers = [registry.scripted_controller(env) for env in cpu]
        worst = dict.fromkeys(slices, 0.0)
        worst["reward"] = 0.0
        agree = {"success": 0, "grasped": 0}
        for _ in range(steps):
            actions = np.stack([c(o) for c, o in zip(controllers, cpu_obs, strict=True)])
            obs, reward, _, truncated, info = batched.step(torch.as_tensor(actions))
            for i, env in enumerate(cpu):
                o, r, _, trunc, inf = env.step(actions[i])
                assert bool(truncated[i]) == trunc
                if trunc:  # the batched world reset itself in this step (SAME_STEP)
                    o, _ = env.reset()
                cpu_obs[i] = o
                for name, sl in slices.items():
                    d = np.abs(obs["observation"][i, sl].numpy() - o["observation"][sl]).max()
                    worst[name] = max(worst[name], float(d))
                worst["reward"] = max(worst["reward"], abs(float(reward[i]) - r))
                agree["success"] += float(info["is_success"][i]) == inf["is_success"]
                if "is_grasped" in inf:
                    agree["grasped"] += float(info["is_grasped"][i]) == inf["is_grasped"]
        out = {"worst": worst, "agree": agree, "samples": steps * N_WORLDS}
        print(task, randomization, steps, "steps:", out)  # the measured figures (pytest -rA)
        return out
    finally:
        batched.close()
        for env in cpu:
            env.close()


@pytest.mark.parametrize("randomization", [None, "default"], ids=["nominal", "randomized"])
def test_reach_matches_the_cpu_env_through_an_episode_and_its_autoreset(randomization):
    # 50 steps is PandaReach's episode: step 50 truncates, resets in the same step from each
    # world's own stream (as the CPU env's next reset()), and two more steps follow. The
    # nominal run (the sparse reward; the randomized one takes the dense) stops at 12 steps
    # to keep the default suite short.
    nominal = randomization is None
    out = _run("PandaReach", randomization, 12 if nominal else 52, dense=not nominal)
    for name, d in out["worst"].items():
        assert d < 1e-4, f"{name} differs by {d:.2e}"
    assert out["agree"]["success"] == out["samples"]


@pytest.mark.parametrize("randomization", [None, "default"], ids=["nominal", "randomized"])
@pytest.mark.parametrize("task", ["PandaPush", "PandaPickPlace", "PandaLift"])
def test_cube_tasks_match_the_cpu_env_over_their_first_steps(task, randomization):
    # The cube settles on the table in the first step (float32 contact: about 1e-4 m).
    out = _run(task, randomization, 8)
    w = out["worst"]
    for name in POSITIONS:
        assert w[name] < 1e-3, f"{name} differs by {w[name]:.2e} m (or rad)"
    assert w["joint_vel"] < 1e-2 and w["object_quat"] < 1e-3 and w["reward"] < 1e-3, w
    assert out["agree"]["success"] == out["samples"]


@pytest.mark.slow
@pytest.mark.parametrize("randomization", [None, "default"], ids=["nominal", "randomized"])
@pytest.mark.parametrize("task", ["PandaPush", "PandaPickPlace", "PandaLift"])
def test_cube_tasks_stay_close_to_the_cpu_env_for_a_whole_episode(task, randomization):
    # Through pushing and grasping, float32 contact differences grow (measured: up to 3.2 cm
    # of cube position after a randomized push episode, docs/warp.md): positions within 5 cm,
    # success and grasp flags agreeing on at least 90% of the steps (a cube near the threshold
    # may count one step earlier or later).
    steps = registry.get(task).episode_steps + 2
    out = _run(task, randomization, steps)
    w = out["worst"]
    for name in POSITIONS:
        assert w[name] < 5e-2, f"{name} differs by {w[name]:.2e}"
    assert out["agree"]["success"] >= 0.9 * out["samples"], out
    if task != "PandaPush":
        assert out["agree"]["grasped"] >= 0.9 * out["samples"], out
