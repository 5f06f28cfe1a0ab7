"""The batched backend's arguments and rewards, without compiling any Warp kernel."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import manip_rl  # noqa: F401  (registers the envs)
from manip_rl.envs import registry
from manip_rl.policies import config as cfgmod

pytest.importorskip("mujoco_warp", reason="needs the warp extra (pip install -e .[warp])")

ID = "manip_rl/PandaReach-v0"


def _make_vec(**kw):
    return gym.make_vec(ID, num_envs=2, vectorization_mode="vector_entry_point", **kw)


def test_an_unknown_backend_is_refused_by_name():
    with pytest.raises(ValueError, match=r"backend='mjx'.*\('warp',\)"):
        _make_vec(backend="mjx")


@pytest.mark.parametrize("device", ["tpu", "cuda:x", 3])
def test_an_unknown_device_is_refused_by_name(device):
    with pytest.raises(ValueError, match=r"device=.*use 'cpu'"):
        _make_vec(backend="warp", device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_cuda_device_says_so():
    with pytest.raises(ValueError, match=r"device='cuda'.*no such CUDA device.*device='cpu'"):
        _make_vec(backend="warp", device="cuda")


def test_arguments_the_batched_env_cannot_honour_are_refused():
    with pytest.raises(ValueError, match=r"render_mode='rgb_array' is not supported"):
        _make_vec(backend="warp", render_mode="rgb_array")
    with pytest.raises(ValueError, match=r"num_envs=0"):
        gym.make_vec(ID, num_envs=0, vectorization_mode="vector_entry_point", backend="warp")


def test_a_training_backend_other_than_cpu_or_warp_is_refused():
    cfg = cfgmod.load_config("PandaReach", "ppo")
    cfg["backend"] = "mjx"
    with pytest.raises(cfgmod.ConfigError, match=r"backend.*mjx"):
        cfgmod.validate(cfg)


def test_the_warp_trainer_refuses_algorithms_it_does_not_run():
    from manip_rl.policies.train_warp import check_config

    cfg = cfgmod.validate({**cfgmod.load_config("PandaReach", "a2c"), "backend": "warp"})
    with pytest.raises(cfgmod.ConfigError, match=r"algo='a2c': backend warp trains only ppo"):
        check_config(cfg)
    cfg = cfgmod.validate({**cfgmod.load_config("PandaReach", "ppo"), "backend": "warp"})
    check_config(cfg)
    cfg["env_kwargs"] = {"max_episode_steps": 80}  # the batched worlds take no gym.make keywords
    with pytest.raises(cfgmod.ConfigError, match=r"env_kwargs=.*backend warp trains the regist"):
        check_config(cfg)


@pytest.mark.parametrize("task", registry.names())
def test_batched_dense_rewards_are_the_cpu_envs_compute_reward(task):
    """Each task's own reward terms, run on torch tensors (xp=TORCH, as the batched backend
    does), against the CPU env's compute_reward on random goals, TCP positions and grasp flags."""
    from manip_rl.envs.warp.torch_ops import TORCH

    spec = registry.get(task)
    env = gym.make(spec.dense_env_id).unwrapped
    rng = np.random.default_rng(0)
    n = 256
    achieved = rng.uniform([0.3, -0.2, 0.0], [0.7, 0.2, 0.3], (n, 3)).astype(np.float32)
    desired = achieved + rng.normal(0, 0.05, (n, 3)).astype(np.float32)
    ee = achieved + rng.normal(0, 0.05, (n, 3)).astype(np.float32)
    grasped = (rng.uniform(size=n) < 0.5).astype(np.float32)
    info = {"ee_pos": ee, "is_grasped": grasped}
    want = env.compute_reward(achieved, desired, info)
    t = {k: torch.as_tensor(v) for k, v in info.items()}
    terms = env._dense_terms(
        torch.as_tensor(achieved), torch.as_tensor(desired), t["ee_pos"], t["is_grasped"], xp=TORCH
    )
    assert all(isinstance(v, torch.Tensor) and v.dtype == torch.float32 for v in terms.values())
    got = sum(terms.values())
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    env.close()


def test_torch_ops_names_a_missing_function():
    from manip_rl.envs.warp.torch_ops import TORCH

    with pytest.raises(AttributeError, match=r"torch_ops.py has no 'hypot'.*xp.hypot"):
        _ = TORCH.hypot
