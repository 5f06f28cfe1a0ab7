"""The policy file (issue 4): export from real SB3 training, parity with SB3 on >= 10,000
observations, closed-loop success in the randomized env, loading without SB3/Gymnasium/MuJoCo,
refusals of bad files, and the ONNX variant.

Policies here are trained for real but briefly (a few hundred steps of each algorithm, so that the
weights and the VecNormalize statistics move off their initial values); the closed-loop test clones
the scripted reach controller into an SB3 policy (behaviour cloning plus one DAgger round) because
that reaches ~90% success in ~15 s where PPO needs minutes."""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.wrappers import FlattenObservation
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

import manip_rl  # noqa: F401  (registers the envs)
from manip_rl import policy_io
from manip_rl.cli import main as cli_main
from manip_rl.export import (
    METADATA_FILE,
    ONNX_WEIGHTS_KEY,
    PARITY_TOLERANCE,
    ExportError,
    PolicyFileError,
    PolicySource,
    check_closed_loop,
    check_isolated,
    check_parity,
    export_policy,
    load_policy,
    parity_observations,
    read_metadata,
    sb3_actions,
    weights_sha256,
)
from manip_rl.policies import rundir
from manip_rl.policies.algorithms import algorithm_class

# The tests re-save files with torch.jit to tamper with them; torch 2.9+ warns on each call.
pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*deprecated:DeprecationWarning")

REACH = "manip_rl/PandaReachDense-v0"
PUSH = "manip_rl/PandaPushDense-v0"
ALGOS = ("ppo", "a2c", "trpo", "reinforce", "ppo_kl")
_ALGO_KWARGS = {
    "ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 2},
    "a2c": {"n_steps": 8},
    "trpo": {"n_steps": 64, "batch_size": 32},
    "reinforce": {"n_steps": 64},
    "ppo_kl": {"n_steps": 64, "batch_size": 32, "n_epochs": 2},
}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def train_tiny(
    algo: str = "ppo",
    flat: bool = True,
    normalize: bool = True,
    env_id: str = REACH,
    action_mode: str = "joint_delta",
    steps: int = 192,
    norm_obs_keys: list[str] | None = None,
    policy_kwargs: dict | None = None,
    algo_kwargs: dict | None = None,
) -> PolicySource:
    """A policy really trained for ``steps`` env steps (weights and statistics off their init)."""

    def make():
        env = gym.make(env_id, randomization="default", action_mode=action_mode)
        return FlattenObservation(env) if flat else env

    venv = DummyVecEnv([make])
    if normalize:
        venv = VecNormalize(venv, norm_obs_keys=norm_obs_keys)
    kwargs = {**_ALGO_KWARGS[algo], **(algo_kwargs or {})}
    model = algorithm_class(algo)(
        "MlpPolicy" if flat else "MultiInputPolicy",
        venv,
        seed=0,
        device="cpu",
        policy_kwargs=policy_kwargs or {"net_arch": [64, 64]},
        **kwargs,
    )
    model.learn(steps)
    if normalize:
        venv.training = False
    return PolicySource(
        model=model,
        vecnormalize=venv if normalize else None,
        env_id=env_id,
        action_mode=action_mode,
        algorithm=algo,
        timesteps=int(model.num_timesteps),
        seed=0,
    )


def save_run(
    path: str, source: PolicySource, flat: bool = True, eval_success=None, env_kwargs=None
) -> str:
    """Write ``source`` in the run-directory layout of manip_rl.policies.rundir."""
    cfg = {
        "env_id": source.env_id,
        "algo": source.algorithm,
        "seed": 0,
        "randomization": source.randomization,
        "action_mode": source.action_mode,
        "flatten_obs": flat,
        "env_kwargs": env_kwargs or {},
    }
    rundir.write_config(path, cfg)
    rundir.save_model_dir(
        source.model,
        source.vecnormalize,
        os.path.join(path, rundir.FINAL_DIR),
        {"timesteps": source.timesteps},
    )
    if eval_success is not None:
        os.makedirs(os.path.join(path, rundir.EVAL_DIR), exist_ok=True)
        with open(os.path.join(path, rundir.EVAL_DIR, rundir.EVAL_FILE), "w") as f:
            f.write("timesteps,wall_s,success_randomized,success_nominal,episodes\n")
            f.write(f"{source.timesteps},1.0,{eval_success},{eval_success},20\n")
    return path


@pytest.fixture(scope="module")
def ppo_flat() -> PolicySource:
    return train_tiny("ppo", flat=True, normalize=True)


@pytest.fixture(scope="module")
def ppo_file(ppo_flat, tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("export") / "policy.pt")
    export_policy(ppo_flat, path)
    return path


# ------------------------------------------------------------------------------------ parity
CASES = [(algo, flat, True) for algo in ALGOS for flat in (True, False)] + [
    (algo, flat, False) for algo in ("ppo", "a2c") for flat in (True, False)
]


@pytest.mark.parametrize(
    "algo,flat,normalize",
    CASES,
    ids=[f"{a}-{'flat' if f else 'dict'}-{'vecnorm' if n else 'raw'}" for a, f, n in CASES],
)
def test_parity_with_sb3_every_algorithm(algo, flat, normalize, tmp_path):
    source = train_tiny(algo, flat=flat, normalize=normalize)
    path = tmp_path / "policy.pt"
    exported = export_policy(source, path)
    policy = load_policy(path)
    assert policy.obs_dim == 30 and policy.act_dim == 7 and policy.task == "reach"
    assert exported.metadata["normalization"]["enabled"] is normalize
    report = check_parity(policy, source, n=10_000)
    assert report["n"] >= 10_000
    assert report["max_abs_diff"] <= PARITY_TOLERANCE, report
    assert report["ok"]


def test_parity_observations_include_extremes(cloned_reach, tmp_path):
    obs = parity_observations(cloned_reach, n=10_000)
    assert len(obs) >= 10_000 and obs.dtype == np.float32
    assert np.abs(obs).max() >= 1e6
    # The observations drive both clips: normalized inputs to +-clip_obs, and Gaussian means
    # beyond the action bounds, which SB3 clips to +-1.
    vn = cloned_reach.vecnormalize
    normalized = vn.normalize_obs(obs)
    assert np.isclose(np.abs(normalized).max(), vn.clip_obs)
    policy = cloned_reach.model.policy
    with torch.no_grad():
        means = policy.get_distribution(torch.as_tensor(normalized)).distribution.mean.numpy()
    assert np.abs(means).max() > 1.5
    actions = sb3_actions(cloned_reach, obs)
    assert np.abs(actions).max() == 1.0
    path = tmp_path / "reach.pt"
    export_policy(cloned_reach, path)
    report = check_parity(load_policy(path), cloned_reach, n=10_000)
    assert report["max_abs_diff"] <= PARITY_TOLERANCE, report


def test_parity_push_ee_delta_dict_with_partly_normalized_keys(tmp_path):
    # Push in end-effector mode (3 + gripper = 4 actions); VecNormalize leaves the goals alone.
    source = train_tiny(
        "ppo", flat=False, env_id=PUSH, action_mode="ee_delta", norm_obs_keys=["observation"]
    )
    path = tmp_path / "push.pt"
    md = export_policy(source, path).metadata
    assert md["task"] == "push" and md["action"]["mode"] == "ee_delta" and md["action"]["dim"] == 4
    assert md["normalization"]["normalized"] == [False] * 6 + [True] * (
        md["observation"]["dim"] - 6
    )
    for file in (path, tmp_path / "push.onnx"):
        if file.suffix == ".onnx":
            export_policy(source, file, fmt="onnx")
        report = check_parity(load_policy(file), source, n=10_000)
        assert report["max_abs_diff"] <= PARITY_TOLERANCE, (file, report)


def test_parity_gsde_squashed_output(tmp_path):
    # gSDE with squash_output: SB3's deterministic action is tanh(mean), not a clip.
    source = train_tiny(
        "ppo",
        policy_kwargs={"net_arch": [32, 32], "squash_output": True},
        algo_kwargs={"use_sde": True},
    )
    assert source.model.policy.squash_output
    path = tmp_path / "sde.pt"
    assert export_policy(source, path).metadata["provenance"]["squash_output"] is True
    export_policy(source, tmp_path / "sde.onnx", fmt="onnx")
    for file in (path, tmp_path / "sde.onnx"):
        report = check_parity(load_policy(file), source, n=10_000)
        assert report["max_abs_diff"] <= PARITY_TOLERANCE, (file, report)


# ------------------------------------------------------------------------------------ metadata
def test_metadata_describes_the_policy(ppo_flat, ppo_file):
    policy = load_policy(ppo_file)
    md = policy.metadata
    env = gym.make(REACH)
    base = env.unwrapped
    assert md["schema_version"] == 1
    assert md["task"] == "reach" and md["env_id"] == REACH
    assert md["observation"]["dim"] == base.layout.flat_dim == policy.obs_dim
    assert md["observation"]["fields"] == base.layout.flat_fields()
    assert md["action"] == base.action_spec.to_json()
    assert policy.action_spec.to_json() == base.action_spec.to_json()
    assert policy.layout == base.layout
    assert policy.control_period == pytest.approx(base.control_period)
    vn = ppo_flat.vecnormalize
    norm = md["normalization"]
    assert norm["enabled"] is True
    np.testing.assert_array_equal(norm["mean"], vn.obs_rms.mean)
    np.testing.assert_array_equal(norm["var"], vn.obs_rms.var)
    assert norm["clip_obs"] == vn.clip_obs and norm["epsilon"] == vn.epsilon
    prov = md["provenance"]
    assert prov["algorithm"] == "ppo" and prov["timesteps"] == ppo_flat.timesteps
    assert {"torch", "numpy", "stable-baselines3", "mujoco"} <= set(prov["packages"])
    assert prov["created_utc"].endswith("Z")
    assert len(md["weights_sha256"]) == 64
    assert read_metadata(ppo_file) == md
    env.close()


def test_export_from_run_directory_records_provenance(ppo_flat, tmp_path):
    run = save_run(str(tmp_path / "run"), ppo_flat, eval_success=0.25)
    out = tmp_path / "p.pt"
    assert cli_main(["export", run, "--out", str(out)]) == 0
    md = load_policy(out).metadata
    prov = md["provenance"]
    assert prov["source_run"].startswith(os.path.abspath(run))
    assert prov["eval_success"]["randomized"] == 0.25
    assert prov["timesteps"] == ppo_flat.timesteps and prov["seed"] == 0
    # The default output path is inside the run.
    assert cli_main(["export", run]) == 0
    assert load_policy(os.path.join(run, "policy.pt")).weights_sha256 == md["weights_sha256"]


def test_a_runs_env_kwargs_travel_in_the_file(ppo_flat, ppo_file, tmp_path):
    """A run trained with env_kwargs (a 200-step episode on the FR3 trajectory path): its file
    records them, make_env builds that env (an override still wins), the demo sizes its episodes
    by them, and a malformed entry is refused by name."""
    from manip_rl.demo import episode_steps

    kwargs = {"max_episode_steps": 200, "trajectory_robot": "fr3"}
    run = save_run(str(tmp_path / "run"), ppo_flat, env_kwargs=kwargs)
    out = tmp_path / "p.pt"
    assert cli_main(["export", run, "--out", str(out)]) == 0
    policy = load_policy(out)
    assert policy.metadata["env_kwargs"] == kwargs
    env = policy.make_env()
    try:
        assert env.spec.max_episode_steps == 200 and env.unwrapped.trajectory_path is not None
    finally:
        env.close()
    env = policy.make_env(max_episode_steps=30)
    assert env.spec.max_episode_steps == 30
    env.close()
    assert episode_steps(policy.env_id, policy.metadata.get("env_kwargs")) == 200
    assert episode_steps(policy.env_id, None) == 50  # PandaReach's own
    md = dict(policy.metadata, env_kwargs={"max_episode_steps": 0})
    bad = str(tmp_path / "bad.pt")
    _resave(str(out), bad, json.dumps(md))
    with pytest.raises(PolicyFileError, match="env_kwargs.max_episode_steps"):
        load_policy(bad)
    md = dict(policy.metadata, env_kwargs={"action_mode": "joint_delta"})
    _resave(str(out), bad, json.dumps(md))
    with pytest.raises(PolicyFileError, match="env_kwargs.action_mode"):
        load_policy(bad)
    # A file without env_kwargs (every shipped one) builds the registered env.
    assert "env_kwargs" not in load_policy(ppo_file).metadata


def test_parity_observations_come_from_the_runs_env():
    """collect_observations builds the env with the run's env_kwargs: with 4-step episodes the
    fifth observation is the next episode's first (seed + 1), where the registered 50-step env
    is still in its first episode."""
    from manip_rl.export import collect_observations

    env_id = "manip_rl/PandaReach-v0"
    short = collect_observations(env_id, 6, seed=3, env_kwargs={"max_episode_steps": 4})
    plain = collect_observations(env_id, 6, seed=3)
    env = gym.make(env_id, randomization="default", max_episode_steps=4)
    second, _ = env.reset(seed=4)
    env.close()
    np.testing.assert_array_equal(short[:4], plain[:4])
    np.testing.assert_array_equal(short[4], policy_io.flatten_observation(second))
    assert not np.array_equal(plain[4], short[4])


def test_cli_export_of_a_missing_run_fails_clearly(tmp_path, capsys):
    assert cli_main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "p.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "p.pt").exists()


def test_weights_hash_covers_parameters_and_normalization(ppo_flat, ppo_file):
    module = torch.jit.load(ppo_file)
    extra = {METADATA_FILE: ""}
    torch.jit.load(ppo_file, _extra_files=extra)
    recorded = json.loads(extra[METADATA_FILE])["weights_sha256"]
    assert weights_sha256(module) == recorded
    first_weight = next(n for n, _ in module.named_parameters() if n.startswith("actor."))
    for name in (first_weight, "obs_shift"):
        changed = torch.jit.load(ppo_file)
        with torch.no_grad():
            _tensor(changed, name).view(-1)[0] += 1e-6
        assert weights_sha256(changed) != recorded, name


# ------------------------------------------------------------------------------------ refusals
def _tensor(module, name: str) -> torch.Tensor:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}[name]


def _resave(src: str, dst: str, metadata: str | None, mutate=None) -> None:
    module = torch.jit.load(src)
    if mutate is not None:
        with torch.no_grad():
            mutate(module)
    extra = {} if metadata is None else {METADATA_FILE: metadata}
    torch.jit.save(module, dst, _extra_files=extra)


def _metadata(path: str) -> dict:
    extra = {METADATA_FILE: ""}
    torch.jit.load(path, _extra_files=extra)
    return json.loads(extra[METADATA_FILE])


def test_refuses_missing_file(tmp_path):
    with pytest.raises(PolicyFileError, match="does not exist"):
        load_policy(tmp_path / "absent.pt")


def test_refuses_files_that_are_not_torchscript(tmp_path, ppo_flat):
    text = tmp_path / "notes.pt"
    text.write_text("not a policy")
    with pytest.raises(PolicyFileError, match="not a TorchScript file"):
        load_policy(text)
    # An SB3 model.zip is a zip archive, but not TorchScript.
    sb3_zip = tmp_path / "model.zip"
    ppo_flat.model.save(sb3_zip)
    assert zipfile.is_zipfile(sb3_zip)
    with pytest.raises(PolicyFileError, match="not a TorchScript file"):
        load_policy(sb3_zip)
    # A truncated policy file (a copy cut short) is refused too.
    ok = tmp_path / "ok.pt"
    export_policy(ppo_flat, ok)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(ok.read_bytes()[:2000])
    with pytest.raises(PolicyFileError, match="not a TorchScript file"):
        load_policy(cut)


def test_refuses_torchscript_without_metadata(tmp_path, ppo_file):
    bare = str(tmp_path / "bare.pt")
    _resave(ppo_file, bare, None)
    with pytest.raises(PolicyFileError, match="no manip_rl.json metadata"):
        load_policy(bare)
    other = str(tmp_path / "other.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(30, 7)), other)
    with pytest.raises(PolicyFileError, match="no manip_rl.json metadata"):
        load_policy(other)


def test_refuses_unknown_schema_version(tmp_path, ppo_file):
    md = _metadata(ppo_file)
    md["schema_version"] = 3
    path = str(tmp_path / "v3.pt")
    _resave(ppo_file, path, json.dumps(md))
    with pytest.raises(PolicyFileError, match="schema version 3 is unknown"):
        load_policy(path)
    md["schema_version"] = 2  # schema 2 is a stateful file's, and declares its memory
    _resave(ppo_file, path, json.dumps(md))
    with pytest.raises(PolicyFileError, match="metadata memory: missing"):
        load_policy(path)
    md["memory"] = {"kind": "history", "history": 2, "state": [
        {"name": "history", "shape": [md["observation"]["dim"]], "dtype": "float32",
         "reset": "zeros"}]}  # fmt: skip
    md["normalization"]["enabled"] = False  # (sized for one step; a history normalizes 2)
    _resave(ppo_file, path, json.dumps(md))
    with pytest.raises(PolicyFileError, match="memory is history, the module's is none"):
        load_policy(path)
    bad = str(tmp_path / "bad_json.pt")
    _resave(ppo_file, bad, "{not json")
    with pytest.raises(PolicyFileError, match="not valid JSON"):
        load_policy(bad)


def test_refuses_weights_that_do_not_match_their_hash(tmp_path, ppo_file):
    md = json.dumps(_metadata(ppo_file))
    path = str(tmp_path / "tampered.pt")
    last = [n for n, _ in torch.jit.load(ppo_file).named_parameters() if n.endswith("weight")][-1]
    _resave(ppo_file, path, md, lambda m: _tensor(m, last).mul_(1.01))
    with pytest.raises(PolicyFileError, match="weights hash mismatch"):
        load_policy(path)
    # Normalization statistics are weights too.
    path2 = str(tmp_path / "tampered_norm.pt")
    _resave(ppo_file, path2, md, lambda m: _tensor(m, "obs_shift").add_(0.5))
    with pytest.raises(PolicyFileError, match="weights hash mismatch"):
        load_policy(path2)


def test_refuses_metadata_whose_statistics_differ_from_the_module(tmp_path, ppo_file):
    # Metadata edited consistently with its own hash, but not with the weights it describes.
    md = _metadata(ppo_file)
    md["normalization"]["mean"] = [m + 1.0 for m in md["normalization"]["mean"]]
    path = str(tmp_path / "edited.pt")
    _resave(ppo_file, path, json.dumps(md))
    with pytest.raises(PolicyFileError, match="normalization statistics"):
        load_policy(path)


def test_refuses_observation_of_the_wrong_size(ppo_file):
    policy = load_policy(ppo_file)
    for bad in (np.zeros(29, np.float32), np.zeros((2, 31), np.float32), np.zeros((2, 3, 30))):
        with pytest.raises(ValueError, match=r"takes 30 values") as e:
            policy.act(bad)
        assert str(bad.shape) in str(e.value)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_act_shapes_and_input_types(ppo_flat, ppo_file, fmt, tmp_path):
    if fmt == "onnx":
        ppo_file = str(tmp_path / "policy.onnx")
        export_policy(ppo_flat, ppo_file, fmt="onnx")
    policy = load_policy(ppo_file)
    obs = parity_observations(ppo_flat, n=100, n_env=50)[:8]
    batch = policy.act(obs)
    assert batch.shape == (8, 7) and batch.dtype == np.float32
    # Batch 1 runs on buffers the policy owns; each call still returns an array of its own.
    singles = [policy.act(o) for o in obs]
    np.testing.assert_allclose(np.stack(singles), batch, atol=1e-6)
    assert not np.allclose(singles[0], singles[1])
    np.testing.assert_allclose(policy.act(obs[3]), batch[3], atol=1e-6)
    assert policy.act(obs[3]).shape == (7,)
    # float64, lists, read-only and strided arrays give the same actions.
    np.testing.assert_allclose(policy.act(obs[3].astype(np.float64)), batch[3], atol=1e-6)
    np.testing.assert_allclose(policy.act(obs[3].tolist()), batch[3], atol=1e-6)
    ro = obs.copy()
    ro.flags.writeable = False
    np.testing.assert_allclose(policy.act(ro), batch, atol=1e-6)
    wide = np.repeat(obs, 2, axis=1)[:, ::2]
    np.testing.assert_allclose(policy.act(wide), batch, atol=1e-6)
    assert np.all(np.abs(policy.act(np.full((2, 30), 1e6, np.float32))) <= 1.0)
    if fmt == "torchscript":
        # act feeds a normalizing module float64 (faster); the action is exactly the one its
        # forward gives the float32 observation, the file's documented input.
        for o in obs[:3]:
            direct = policy.module.forward(torch.from_numpy(o[None].copy())).numpy()[0]
            np.testing.assert_array_equal(policy.act(o), direct)


def test_refuses_models_it_cannot_export(tmp_path):
    source = train_tiny("ppo", steps=64)
    with pytest.raises(ExportError, match="not a manip_rl task"):
        export_policy(source.model, tmp_path / "x.pt", env_id="CartPole-v1")
    with pytest.raises(ExportError, match="needs env_id"):
        export_policy(source.model, tmp_path / "x.pt")
    with pytest.raises(ExportError, match="format"):
        export_policy(source, tmp_path / "x.pt", fmt="tflite")
    # A reach model declared as push: sizes disagree, the message says so.
    with pytest.raises(ExportError, match="action"):
        export_policy(source.model, tmp_path / "x.pt", env_id=PUSH)
    assert not (tmp_path / "x.pt").exists()


# ------------------------------------------------------------------------------------ isolation
def test_loads_and_acts_without_sb3_gymnasium_mujoco(ppo_flat, ppo_file):
    result = check_isolated(ppo_file)
    assert result["blocker_active"], result
    assert result["leaked"] == [], result
    assert result["ok"], result
    expected = load_policy(ppo_file).act(np.zeros(30, np.float32))
    np.testing.assert_allclose(result["action"], expected, atol=1e-6)


# ------------------------------------------------------------------------------------ ONNX
def test_onnx_export_parity_and_metadata(ppo_flat, ppo_file, tmp_path):
    import onnx

    path = tmp_path / "policy.onnx"
    export_policy(ppo_flat, path, fmt="onnx")
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    md_onnx = json.loads(props[METADATA_FILE])
    md_ts = _metadata(ppo_file)
    for d in (md_onnx, md_ts):
        d["provenance"].pop("created_utc")
    assert md_onnx == md_ts
    policy = load_policy(path)
    assert policy.format == "onnx" and policy.obs_dim == 30
    report = check_parity(policy, ppo_flat, n=10_000)
    assert report["max_abs_diff"] <= PARITY_TOLERANCE, report
    assert policy.act(np.zeros((3, 30), np.float32)).shape == (3, 7)
    with pytest.raises(ValueError, match="takes 30 values"):
        policy.act(np.zeros(12, np.float32))
    # Tampered initializers are refused.
    from onnx import numpy_helper

    init = model.graph.initializer[0]
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += 1.0
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    bad = tmp_path / "tampered.onnx"
    onnx.save(model, str(bad))
    with pytest.raises(PolicyFileError, match="weights hash mismatch"):
        load_policy(bad)
    assert ONNX_WEIGHTS_KEY in props


def test_onnx_refusals(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(PolicyFileError):
        load_policy(junk)
    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript-based exporter
        torch.onnx.export(
            torch.nn.Linear(30, 7), (torch.zeros(1, 30),), buf, dynamo=False, input_names=["obs"]
        )
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(buf.getvalue())
    assert onnx.load(str(plain)).graph.node
    with pytest.raises(PolicyFileError, match="no manip_rl.json metadata"):
        load_policy(plain)


# ------------------------------------------------------------------------------------ closed loop
def _cloned_reach_policy() -> PolicySource:
    """The scripted reach controller cloned into an SB3 PPO MlpPolicy with VecNormalize:
    behaviour cloning on 30 scripted episodes, then one DAgger round (20 episodes of the policy,
    labelled by the controller). About 90% success on the randomized env."""
    from stable_baselines3 import PPO

    from manip_rl.envs.scripted import scripted_policy

    env = gym.make(REACH, randomization="default")
    expert = scripted_policy(env)
    venv = VecNormalize(
        DummyVecEnv([lambda: FlattenObservation(gym.make(REACH, randomization="default"))])
    )
    venv.training = False
    model = PPO("MlpPolicy", venv, seed=0, device="cpu", policy_kwargs={"net_arch": [64, 64]})
    policy = model.policy
    opt = torch.optim.Adam(policy.parameters(), 3e-3)
    gen = torch.Generator().manual_seed(0)
    xs, ys = [], []

    def rollout(episodes: int, seed: int, learner: bool) -> None:
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            done = False
            while not done:
                flat = policy_io.flatten_observation(obs)
                xs.append(flat)
                ys.append(expert(obs))
                if learner:
                    action = model.predict(venv.normalize_obs(flat), deterministic=True)[0]
                else:
                    action = ys[-1]
                obs, _, terminated, truncated, _ = env.step(action)
                done = terminated or truncated

    def fit(iterations: int) -> None:
        x = torch.as_tensor(venv.normalize_obs(np.stack(xs)))
        y = torch.as_tensor(np.stack(ys))
        for _ in range(iterations):
            idx = torch.randint(0, len(x), (256,), generator=gen)
            latent = policy.mlp_extractor.forward_actor(policy.extract_features(x[idx]))
            loss = ((policy.action_net(latent) - y[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

    rollout(30, 0, learner=False)
    venv.obs_rms.update(np.stack(xs))
    fit(800)
    rollout(20, 500, learner=True)
    fit(600)
    env.close()
    return PolicySource(
        model=model, vecnormalize=venv, env_id=REACH, algorithm="ppo", timesteps=len(xs), seed=0
    )


@pytest.fixture(scope="module")
def cloned_reach() -> PolicySource:
    return _cloned_reach_policy()


def test_closed_loop_success_matches_sb3(cloned_reach, tmp_path):
    path = tmp_path / "reach.pt"
    export_policy(cloned_reach, path)
    report = check_closed_loop(load_policy(path), cloned_reach, episodes=30)
    assert report["sb3"]["rate"] >= 0.5, report  # a policy that succeeds, so the check means much
    assert report["ok"], report
    assert report["file"]["ci95"][0] <= report["sb3"]["rate"] <= report["file"]["ci95"][1]


def test_closed_loop_check_catches_a_file_without_normalization(cloned_reach, tmp_path):
    # The failure users of other stacks report most: the export drops VecNormalize.
    path = tmp_path / "broken.pt"
    export_policy(cloned_reach.model, path, env_id=REACH, vecnormalize=None)
    report = check_closed_loop(load_policy(path), cloned_reach, episodes=30)
    assert not report["ok"], report
    assert report["file"]["rate"] < report["sb3"]["ci95"][0]


def test_cli_verify_runs_all_three_checks(cloned_reach, tmp_path, capsys):
    run = save_run(str(tmp_path / "run"), cloned_reach)
    out = tmp_path / "policy.pt"
    code = cli_main(["export", run, "--out", str(out), "--verify", "--episodes", "20"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "parity     PASS" in text and "closed loop PASS" in text and "isolated   PASS" in text


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_cli_verify_full_size(cloned_reach, tmp_path, capsys, fmt):
    run = save_run(str(tmp_path / "run"), cloned_reach)
    out = tmp_path / ("policy.onnx" if fmt == "onnx" else "policy.pt")
    code = cli_main(
        ["export", run, "--out", str(out), "--format", fmt, "--verify", "--episodes", "100"]
    )
    assert code == 0, capsys.readouterr().out


# ------------------------------------------------------------------------------------ real runs
@pytest.mark.parametrize("algo", ["trpo", "ppo_kl"])
def test_export_verify_of_a_run_written_by_manip_rl_train(algo, tmp_path, capsys):
    # The whole path: `manip-rl train`'s own run directory (config, best/final, VecNormalize),
    # then `manip-rl export --verify`.
    from manip_rl.policies import config as cfgmod
    from manip_rl.policies.train import train

    cfg = cfgmod.load_config("PandaReach", algo)
    cfg.update(total_timesteps=128, n_envs=2, vec_env="dummy", checkpoint_freq=128)
    cfg["eval"] = {"freq": 0, "episodes": 1}
    cfg["policy_kwargs"] = {**cfg["policy_kwargs"], "net_arch": [32, 32]}
    cfg["hyperparams"].update(n_steps=32)
    if "batch_size" in cfg["hyperparams"]:
        cfg["hyperparams"]["batch_size"] = 32
    cfg["randomization"] = cfgmod.randomization_dict(cfg)
    run = str(tmp_path / "run")
    os.makedirs(run)
    rundir.write_config(run, cfg)
    train(run, cfg, progress=False)
    out = tmp_path / "policy.pt"
    code = cli_main(["export", run, "--out", str(out), "--verify", "--episodes", "4"])
    text = capsys.readouterr().out
    assert code == 0, text
    md = load_policy(out).metadata
    assert md["provenance"]["algorithm"] == algo
    assert md["provenance"]["randomization"] == cfg["randomization"]
    assert md["normalization"]["enabled"] is True
    assert "closed loop PASS" in text and "randomization: run" in text


def test_refuses_malformed_metadata(tmp_path, ppo_file):
    for label, edit in (
        # The file's layout is its own contract (a task name is a label, not looked up).
        ("fields", lambda md: md["observation"]["fields"][3].update(name="juggle")),
        ("action", lambda md: md["action"].pop("joint_scale_rad")),
        ("period", lambda md: md.update(control_period_s="fast")),
        ("missing", lambda md: md.pop("normalization")),
    ):
        md = _metadata(ppo_file)
        edit(md)
        path = str(tmp_path / f"{label}.pt")
        _resave(ppo_file, path, json.dumps(md))
        with pytest.raises(PolicyFileError, match="metadata"):
            load_policy(path)


def test_a_torchscript_policy_file_converts_to_onnx_with_its_metadata(ppo_file, tmp_path, capsys):
    """`manip-rl export FILE.pt --format onnx`: no run needed; same metadata (plus where it came
    from), same actions, and the refusals name what to do."""
    out = tmp_path / "converted.onnx"
    assert cli_main(["export", ppo_file, "--format", "onnx", "--out", str(out)]) == 0
    assert "parity PASS" in capsys.readouterr().out
    src, onnx_policy = load_policy(ppo_file), load_policy(out)
    assert onnx_policy.format == "onnx"
    md_src, md_onnx = _metadata(ppo_file), onnx_policy.metadata
    converted_from = md_onnx["provenance"].pop("converted_from")
    assert converted_from == {
        "file": os.path.basename(ppo_file),
        "weights_sha256": src.weights_sha256,
    }
    assert md_onnx == md_src
    obs = np.random.default_rng(1).normal(0.0, 5.0, size=(500, src.obs_dim)).astype(np.float32)
    assert np.abs(onnx_policy.act(obs) - src.act(obs)).max() <= PARITY_TOLERANCE

    assert cli_main(["export", ppo_file, "--out", str(tmp_path / "again.pt")]) == 2
    assert "add --format onnx" in capsys.readouterr().err
    assert (
        cli_main(["export", str(out), "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    )
    assert "ONNX already" in capsys.readouterr().err
    assert cli_main(["export", ppo_file, "--format", "onnx", "--out", str(tmp_path / "x.pt")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err
