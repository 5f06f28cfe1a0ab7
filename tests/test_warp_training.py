"""Training on the batched backend (Warp's CPU device, rsl_rl's PPO): the normal run directory,
an exported policy file that is the trained actor, and ADR drawing each world's ranges."""

import os
import types

import numpy as np
import pytest
import torch
from training_helpers import tiny_config

pytest.importorskip("mujoco_warp", reason="needs the warp extra (pip install -e .[warp])")

from manip_rl.export import load_policy  # noqa: E402
from manip_rl.export.build import export_policy  # noqa: E402
from manip_rl.policies import rundir  # noqa: E402
from manip_rl.policies.train import train  # noqa: E402

pytestmark = pytest.mark.warp


def _warp_config(steps: int = 64, **over) -> dict:
    cfg = tiny_config("ppo", steps=steps, backend="warp", n_envs=8, **over)
    cfg["hyperparams"].update(n_steps=4, batch_size=16, n_epochs=2)
    cfg["eval"] = {"freq": 0, "episodes": 2}  # one CPU evaluation, at the end
    return cfg


def test_a_warp_run_writes_the_run_directory_and_exports_the_trained_actor(tmp_path):
    path = str(tmp_path / "run")
    os.makedirs(path)
    cfg = _warp_config()
    rundir.write_config(path, cfg)
    out = train(path, cfg, progress=False)

    run = rundir.load_run(path)
    assert run.timesteps == 64 == out["steps"]  # 2 iterations of 8 worlds x 4 steps
    for which in ("final", "latest"):
        assert run.load_vecnormalize(which).obs_rms.count > 8  # statistics from the worlds
    policy_file = str(tmp_path / "policy.pt")
    export_policy(run, policy_file, which="final")
    policy = load_policy(policy_file)

    # The file's action is the rsl_rl actor's mean on VecNormalize-normalized observations,
    # clipped: the mirror copied every layer, the action std and the statistics.
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 0.5, (16, policy.obs_dim)).astype(np.float32)
    norm = out["normalizer"]
    with torch.no_grad():
        x = norm.observation(torch.as_tensor(raw), update=False)
        from tensordict import TensorDict

        want = out["actor"](TensorDict({"policy": x}, batch_size=[16])).clamp(-1, 1).numpy()
    np.testing.assert_allclose(policy.act(raw), want, atol=1e-5)
    # ... and the file drives the CPU env it describes.
    env = policy.make_env()
    obs, _ = env.reset(seed=0)
    assert env.action_space.contains(policy.act(obs))
    env.close()


def test_adr_on_the_batched_backend_draws_each_worlds_ranges(tmp_path):
    """ADR's state and update rule on the worlds: each world's reset draws its episode's
    randomization from the ADR ranges into that world's model fields, and an ended episode
    that evaluated a boundary is recorded in the ADR state."""
    from manip_rl.envs.warp.vec_env import WarpVecEnv
    from manip_rl.policies.train_warp import _adr_hooks
    from manip_rl.transfer import adr, adr_run
    from manip_rl.transfer.adr_callback import AdrCallback

    path = str(tmp_path / "adr")
    os.makedirs(path)
    cfg = _warp_config()
    rundir.write_config(path, cfg)
    settings = adr.load_settings("adr", "reach").to_dict()
    settings["boundary_prob"] = 1.0  # every episode evaluates a boundary
    adr_run.init_run(path, cfg, settings)
    cb = AdrCallback.for_run(path, cfg, None)
    cb.state.ranges["link_mass"] = [0.5, 2.0]  # as if ADR had widened it
    before_reset, world_done = _adr_hooks(cb, cfg, "reach", 4, seed=0)
    env = WarpVecEnv("PandaReach", 4, randomization=cfg["randomization"],
                     before_reset=before_reset, batch_randomization=True)  # fmt: skip
    env.reset(seed=0)
    arm = env.scene.ids.arm_bodies[:7]
    masses = env.scene.fields["body_mass"][:, arm].numpy()
    nominal = env.scene.mj_model.body_mass[arm]
    for w in range(4):
        drawn = env.last_reset_infos[w]["randomization"]["link_mass"][:7]
        np.testing.assert_allclose(masses[w], nominal * drawn, rtol=1e-6)
    scale = masses / nominal
    assert scale.min() >= 0.5 - 1e-6 and scale.max() <= 2.0 + 1e-6
    assert scale.max() > 1.5  # drawn from the widened ADR range, past the default [0.5, 1.5]
    # Episodes that pinned a boundary are recorded when they end.
    env._reset_worlds([0, 1, 2, 3], None, None)  # a second episode: the first ones ended
    world_done([0, 1, 2, 3], [1.0, 1.0, 0.0, 1.0], types.SimpleNamespace(num_timesteps=64))
    assert cb.boundary_episodes == 4
    assert sum(len(b) for b in cb.state.buffers.values()) == 4
    env.close()


def test_a_warp_run_resumes_from_its_checkpoint_with_rsl_rls_optimizer(tmp_path):
    """Each checkpoint carries rsl_rl's actor, critic, optimizer and the normalizer
    (checkpoints/rsl_N.pt); a resumed run continues from them: Adam's step count goes on from
    the checkpoint's (a fresh optimizer would restart it), and the logs continue without
    repeating steps."""
    path = str(tmp_path / "run")
    os.makedirs(path)
    cfg = _warp_config(steps=64)
    rundir.write_config(path, cfg)
    train(path, cfg, progress=False)
    ckdir = os.path.join(path, rundir.CHECKPOINT_DIR)
    first = torch.load(os.path.join(ckdir, "rsl_64.pt"), weights_only=False)
    adam_steps = [float(s["step"]) for s in first["optimizer"]["state"].values()]
    assert first["steps"] == 64 and min(adam_steps) > 0

    cfg = {**cfg, "total_timesteps": 128}
    rundir.write_config(path, cfg)
    out = train(path, cfg, progress=False, resume_from=rundir.load_run(path).latest_checkpoint())
    run = rundir.load_run(path)
    assert run.timesteps == 128 == out["steps"]
    second = torch.load(os.path.join(ckdir, "rsl_128.pt"), weights_only=False)
    resumed_steps = [float(s["step"]) for s in second["optimizer"]["state"].values()]
    # Two iterations before, two after, the same number of updates each: twice the count.
    np.testing.assert_allclose(resumed_steps, [2 * s for s in adam_steps])
    import csv

    with open(os.path.join(path, rundir.LOG_DIR, "progress.csv")) as f:
        steps = [int(float(r["time/total_timesteps"])) for r in csv.DictReader(f)
                 if r.get("time/total_timesteps")]  # fmt: skip
    assert steps == sorted(set(steps)) and steps[-1] == 128 and 64 in steps, steps

    # A checkpoint without the rsl_rl state (an older run) is refused, naming the file.
    os.remove(os.path.join(ckdir, "rsl_128.pt"))
    with pytest.raises(rundir.RunError, match="rsl_128.pt"):
        train(path, {**cfg, "total_timesteps": 192}, progress=False,
              resume_from=rundir.load_run(path).latest_checkpoint())  # fmt: skip
