"""Issue 20, files and configs: every bad policy file, run directory, training config and
randomization file is refused before it costs anything, with a message naming the field, and
none leaves a run directory behind.

Every case is a row of one table; ``test_every_bad_input_is_refused_naming_the_field`` runs
them all and prints the figure (refused with the field named / total, run dirs left behind):

    PYTHONPATH=$PWD python -m pytest -q -s tests/test_bad_inputs_files.py -k every_bad_input
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import manip_rl
from manip_rl.cli import main as cli_main
from manip_rl.export import Exported, PolicyFileError, _write_onnx, load_policy
from manip_rl.policies import rundir

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*deprecated:DeprecationWarning")

PRETRAINED = Path(manip_rl.__file__).parent / "policies" / "pretrained"
REACH, PUSH = PRETRAINED / "panda_reach.pt", PRETRAINED / "panda_push.pt"


def _metadata(path: Path) -> dict:
    extra = {"manip_rl.json": ""}
    torch.jit.load(str(path), _extra_files=extra)
    return json.loads(extra["manip_rl.json"])


def _edited_torchscript(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    """``src`` re-saved with its metadata edited and its weights untouched (hash still valid)."""
    md = _metadata(src)
    edit(md)
    torch.jit.save(
        torch.jit.load(str(src)), str(dst), _extra_files={"manip_rl.json": json.dumps(md)}
    )
    return dst


def _edited_onnx(src: Path, dst: Path, edit: Callable[[dict], None]) -> Path:
    """``src`` written as ONNX with its metadata edited (the ONNX hash covers the graph)."""
    policy = load_policy(src, optimize=False)
    md = copy.deepcopy(policy.metadata)
    edit(md)
    _write_onnx(Exported(policy.module, md, None, None), str(dst))  # type: ignore[arg-type]
    return dst


def _set(path: str, value) -> Callable[[dict], None]:
    def edit(md: dict) -> None:
        *parents, last = path.split(".")
        node = md
        for p in parents:
            node = node[p]
        node[last] = value(node[last]) if callable(value) else value

    return edit


def _both(*edits: Callable[[dict], None]) -> Callable[[dict], None]:
    def edit(md: dict) -> None:
        for e in edits:
            e(md)

    return edit


# (case id, source file, edit, the field the message must name)
METADATA_CASES = [
    ("limits_10rad", REACH, lambda md: md["action"].update(lower=[-10.0] * 7, upper=[10.0] * 7),
     "action.lower"),
    ("upper_10rad", REACH, _set("action.upper", [10.0] * 7), "action.upper"),
    ("joint_names_repeat", REACH, _set("action.joint_names", ["panda_joint1"] * 7),
     "action.joint_names"),
    ("six_joint_names", REACH, _set("action.joint_names", [f"j{i}" for i in range(6)]),
     "action.joint_names"),
    ("period_1e6", REACH, _set("control_period_s", 1e6), "control_period_s"),
    ("period_0", REACH, _set("control_period_s", 0.0), "control_period_s"),
    ("period_nan", REACH, _set("control_period_s", math.nan), "control_period_s"),
    ("period_string", REACH, _set("control_period_s", "fast"), "control_period_s"),
    ("joint_scale_50", REACH, _set("action.joint_scale_rad", 50.0), "action.joint_scale_rad"),
    ("joint_scale_negative", REACH, _set("action.joint_scale_rad", -0.1),
     "action.joint_scale_rad"),
    ("ee_scale_5m", PUSH, _set("action.ee_scale_m", 5.0), "action.ee_scale_m"),
    ("inverted_limits", REACH,
     lambda md: md["action"].update(lower=md["action"]["upper"], upper=md["action"]["lower"]),
     "action.lower"),
    ("short_limits", REACH, _set("action.lower", lambda v: v[:6]), "action.lower"),
    ("nan_limit", REACH, _set("action.upper", lambda v: [math.nan, *v[1:]]), "action.upper"),
    ("home_outside", REACH, _set("action.home", lambda v: [3.5, *v[1:]]), "action.home"),
    ("unknown_mode", REACH, _set("action.mode", "teleport"), "action.mode"),
    # A gripper entry (dim and flag consistent) on a policy that observes no gripper.
    ("reach_with_gripper", REACH, _both(_set("action.gripper", True), _set("action.dim", 8)),
     "action.gripper"),
    ("finger_names_repeat", PUSH, _set("action.gripper_joint_names", ["f", "f"]),
     "action.gripper_joint_names"),
    ("gripper_opening_1m", PUSH, _set("action.gripper_max_opening_m", 1.0),
     "action.gripper_max_opening_m"),
    ("action_dim", PUSH, _set("action.dim", 8), "action.dim"),
    ("ee_floor_underground", PUSH, _set("action.ee_z_min_m", -5.0), "action.ee_z_min_m"),
    ("posture_gain_3", PUSH, _set("action.ee_posture_gain", 3.0), "action.ee_posture_gain"),
    ("negative_variance", REACH, _set("normalization.var", lambda v: [-1.0, *v[1:]]),
     "normalization.var"),
    ("short_mean", REACH, _set("normalization.mean", lambda v: v[:5]), "normalization.mean"),
    ("clip_obs_negative", REACH, _set("normalization.clip_obs", -10.0), "normalization.clip_obs"),
    ("observation_dim", REACH, _set("observation.dim", 31), "observation.dim"),
    ("unknown_robot", REACH, lambda md: md.update(robot="ur5"), "robot"),
]  # fmt: skip
ONNX_CASES = [
    ("onnx_limits_10rad", REACH, _set("action.lower", [-10.0] * 7), "action.lower"),
    ("onnx_period_0", REACH, _set("control_period_s", 0.0), "control_period_s"),
    ("onnx_mean_edited", REACH, _set("normalization.mean", lambda v: [x + 1.0 for x in v]),
     "normalization.mean"),
    ("onnx_clip_edited", REACH, _set("normalization.clip_obs", 5.0), "normalization.clip_obs"),
    ("onnx_normalization_off", REACH, _set("normalization.enabled", False), "normalization"),
]  # fmt: skip


def _refusal_of(fn: Callable[[], object]) -> str | None:
    """The message of the clean refusal ``fn`` raises, or None when it does not refuse."""
    try:
        fn()
    except (PolicyFileError, rundir.RunError, ValueError) as e:
        return str(e)
    except SystemExit as e:
        return str(e.code)
    except Exception:  # a traceback (RecursionError, a numpy broadcast error...) is no refusal
        return None
    return None


@pytest.mark.parametrize(
    "case, src, edit, field", METADATA_CASES, ids=[c[0] for c in METADATA_CASES]
)
def test_edited_torchscript_metadata_is_refused_naming_the_field(tmp_path, case, src, edit, field):
    path = _edited_torchscript(src, tmp_path / f"{case}.pt", edit)
    with pytest.raises(PolicyFileError) as e:
        load_policy(path)
    assert field in str(e.value), str(e.value)
    assert "export the policy again" in str(e.value) or "export it again" in str(e.value)


@pytest.mark.parametrize("case, src, edit, field", ONNX_CASES, ids=[c[0] for c in ONNX_CASES])
def test_edited_onnx_metadata_is_refused_naming_the_field(tmp_path, case, src, edit, field):
    path = _edited_onnx(src, tmp_path / f"{case}.onnx", edit)
    with pytest.raises(PolicyFileError) as e:
        load_policy(path)
    assert field in str(e.value), str(e.value)
    assert "TorchScript" not in str(e.value), "an ONNX file's errors speak of ONNX"


def test_onnx_errors_name_onnx_not_torchscript(tmp_path):
    import io
    import warnings

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(torch.nn.Linear(30, 7), (torch.zeros(1, 30),), buf, dynamo=False)
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(buf.getvalue())
    with pytest.raises(PolicyFileError) as e:
        load_policy(plain)
    assert "ONNX" in str(e.value) and "TorchScript" not in str(e.value)


def test_shipped_files_load_and_act_within_the_datasheet_limits():
    """The shipped files carry the sim model's joint-6 lower limit (-0.0865, 0.069 rad below the
    datasheet's -0.0175): they load, and their limits are narrowed to the datasheet's."""
    from manip_rl.robots import PANDA

    for name in ("panda_reach.pt", "panda_push.pt", "panda_pick_place.pt"):
        policy = load_policy(PRETRAINED / name)
        assert policy.metadata["action"]["lower"][5] == pytest.approx(-0.0865)
        assert np.all(policy.action_spec.lower >= PANDA.lower)
        assert np.all(policy.action_spec.upper <= PANDA.upper)
        assert policy.action_spec.lower[5] == pytest.approx(PANDA.lower[5])


# ------------------------------------------------------------------------------------ runs
def _tiny_model():
    import gymnasium as gym
    from gymnasium.wrappers import FlattenObservation
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    venv = VecNormalize(DummyVecEnv([lambda: FlattenObservation(gym.make(
        "manip_rl/PandaReachDense-v0"))]))  # fmt: skip
    return PPO("MlpPolicy", venv, n_steps=8, batch_size=8, policy_kwargs={"net_arch": [8]},
               device="cpu"), venv  # fmt: skip


def _run_config() -> dict:
    from manip_rl.policies import config as cfgmod

    cfg = cfgmod.load_config("PandaReach", "ppo")
    cfg["randomization"] = cfgmod.randomization_dict(cfg)
    return cfg


def _run_without_model(root: Path) -> str:
    path = str(root / "no_model")
    os.makedirs(path)
    rundir.write_config(path, _run_config())
    return path


def _run_with_corrupt_latest(root: Path) -> str:
    path = _run_without_model(root / "corrupt")
    os.makedirs(os.path.join(path, "checkpoints"))
    Path(path, "checkpoints", "latest.json").write_text('{"timesteps": 4')  # cut by a kill
    return path


def _run_without_vecnormalize(root: Path) -> str:
    path = str(root / "no_vecnorm")
    os.makedirs(path)
    cfg = _run_config()
    assert cfg["normalize"]["norm_obs"], "the run declares normalization"
    rundir.write_config(path, cfg)
    model, _ = _tiny_model()
    rundir.save_model_dir(model, None, os.path.join(path, "final"), {"timesteps": 0})
    return path


RUN_CASES = [
    ("no_model", _run_without_model, "saved no model yet"),
    ("corrupt_latest_json", _run_with_corrupt_latest, "latest.json"),
    ("vecnormalize_missing", _run_without_vecnormalize, "vecnormalize.pkl"),
]


def _export(run: str, tmp: Path) -> Callable[[], object]:
    from manip_rl.export import export_policy

    return lambda: export_policy(run, tmp / "policy.pt")


def _eval(run: str, tmp: Path) -> Callable[[], object]:
    return lambda: cli_main(["eval", run, "--episodes", "1"])


def _robustness(run: str, tmp: Path) -> Callable[[], object]:
    return lambda: cli_main(["robustness", run, "--quantities", "damping_scale", "--values",
                             "damping_scale=1.0", "--episodes", "1", "--out", str(tmp / "rob")])  # fmt: skip


COMMANDS = {"export": _export, "eval": _eval, "robustness": _robustness}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("case, make, expected", RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_unusable_runs_are_refused_by_export_eval_and_robustness(
    tmp_path, case, make, expected, command
):
    run = make(tmp_path)
    message = _refusal_of(COMMANDS[command](run, tmp_path))  # RecursionError before the fix
    assert message is not None and expected in message, message
    assert not (tmp_path / "policy.pt").exists()


def test_export_cli_refuses_a_run_without_its_declared_normalization(tmp_path, capsys):
    run = _run_without_vecnormalize(tmp_path)
    assert cli_main(["export", run, "--out", str(tmp_path / "p.pt")]) == 2
    err = capsys.readouterr().err
    assert "vecnormalize.pkl" in err and "normalizes" in err
    assert not (tmp_path / "p.pt").exists()


# ------------------------------------------------------------------------------------ configs
def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# (case id, extra `manip-rl train` arguments given the tmp dir, the key the message must name)
CONFIG_CASES = [
    ("gamma_1.5", lambda t: ["--set", "hyperparams.gamma=1.5"], "hyperparams.gamma"),
    ("gamma_0", lambda t: ["--set", "hyperparams.gamma=0"], "hyperparams.gamma"),
    ("clip_obs_-10", lambda t: ["--set", "normalize.clip_obs=-10"], "normalize.clip_obs"),
    ("checkpoint_freq_0", lambda t: ["--set", "checkpoint_freq=0"], "checkpoint_freq"),
    ("unknown_hyperparameter", lambda t: ["--set", "hyperparams.learning_rat=3e-4"],
     "learning_rat"),
    ("string_learning_rate", lambda t: ["--set", "hyperparams.learning_rate=fast"],
     "hyperparams.learning_rate"),
    ("negative_learning_rate", lambda t: ["--set", "hyperparams.learning_rate=-1"],
     "hyperparams.learning_rate"),
    ("n_steps_0", lambda t: ["--set", "hyperparams.n_steps=0"], "hyperparams.n_steps"),
    ("batch_size_1", lambda t: ["--set", "hyperparams.batch_size=1"], "hyperparams.batch_size"),
    ("action_mode_teleport", lambda t: ["--set", "action_mode=teleport"], "action_mode"),
    ("unknown_top_key", lambda t: ["--set", "n_envz=2"], "n_envz"),
    ("eval_episodes_0", lambda t: ["--set", "eval.episodes=0"], "eval.episodes"),
    ("unknown_eval_key", lambda t: ["--set", "eval.frequency=10"], "eval.frequency"),
    ("net_arch_strings", lambda t: ["--set", "policy_kwargs.net_arch=[a,b]"],
     "policy_kwargs.net_arch"),
    ("activation_sigmoid", lambda t: ["--set", "policy_kwargs.activation_fn=sigmoid"],
     "policy_kwargs.activation_fn"),
    ("seed_string", lambda t: ["--set", "seed=abc"], "seed"),
    ("env_id_unregistered", lambda t: ["--set", "env_id=manip_rl/PandaReachDense-v9"], "env_id"),
    ("normalize_unknown_key", lambda t: ["--set", "normalize.clip=5"], "normalize.clip"),
    ("randomization_misspelt", lambda t: ["--randomization", "defualt"], "randomization"),
    ("randomization_physics_heavy",
     lambda t: ["--randomization", _write(t / "heavy.yaml", "physics: heavy\n")], "physics"),
    ("randomization_empty_file",
     lambda t: ["--randomization", _write(t / "empty.yaml", "")], "empty.yaml"),
    ("randomization_bad_yaml",
     lambda t: ["--randomization", _write(t / "bad_dr.yaml", "physics:\n  link_mass: [1, 2\n")],
     "bad_dr.yaml, line"),
    ("config_bad_yaml",
     lambda t: ["--config", _write(t / "bad.yaml", "hyperparams:\n  gamma: 0.9\n bad: [\n")],
     "bad.yaml, line"),
    ("config_gamma_in_file",
     lambda t: ["--config", _write(t / "g.yaml", "hyperparams: {gamma: 1.5}\n")],
     "hyperparams.gamma"),
    ("config_not_a_mapping", lambda t: ["--config", _write(t / "list.yaml", "- 1\n- 2\n")],
     "list.yaml"),
]  # fmt: skip


def _train_refusal(tmp_path: Path, extra: list[str]) -> tuple[str | None, bool]:
    """(the refusal message of `manip-rl train` with ``extra``, whether a run dir was left)."""
    run = tmp_path / "run"
    argv = ["train", "--task", "PandaReach", "--run-dir", str(run), "--no-progress",
            "--timesteps", "64", "--n-envs", "1", "--vec-env", "dummy", *extra]  # fmt: skip
    message = _refusal_of(lambda: cli_main(argv))
    return message, run.exists()


@pytest.mark.parametrize("case, args, key", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_bad_training_configs_are_refused_before_a_run_directory_exists(tmp_path, case, args, key):
    message, left = _train_refusal(tmp_path, args(tmp_path))
    assert message is not None and key in message, message
    assert "Traceback" not in message
    assert not left, "a refused config leaves no run directory"


def test_train_with_a_bad_config_exits_non_zero_with_the_message_and_no_run(tmp_path):
    """The command itself, in a process of its own: exit status, message, no directory."""
    run = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "manip_rl.cli", "train", "--task", "PandaReach", "--run-dir",
         str(run), "--set", "hyperparams.gamma=1.5"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )  # fmt: skip
    assert res.returncode != 0
    assert "hyperparams.gamma=1.5" in res.stderr and "(0, 1]" in res.stderr
    assert "Traceback" not in res.stderr
    assert not run.exists()


def test_unknown_keys_offer_the_closest_allowed_one():
    from manip_rl.policies import config as cfgmod

    cfg = cfgmod.load_config("PandaPush", "ppo")
    with pytest.raises(cfgmod.ConfigError, match="did you mean 'learning_rate'") as e:
        cfgmod.validate({**cfg, "hyperparams": {"learning_rat": 3e-4}})
    assert "allowed:" in str(e.value)
    with pytest.raises(cfgmod.ConfigError, match="did you mean 'checkpoint_freq'"):
        cfgmod.validate({**cfg, "checkpoint_frq": 10})


def test_shipped_training_configs_pass_the_checks_unchanged():
    from manip_rl.policies import config as cfgmod
    from manip_rl.policies.algorithms import ALGORITHMS

    for task in cfgmod.TASKS:
        for algo in ALGORITHMS:
            cfg = cfgmod.load_config(task, algo)
            checked = cfgmod.validate(cfg)
            assert checked["hyperparams"] == cfg["hyperparams"]
            typed = cfgmod.typed(cfg)
            assert typed.algo == algo and typed.normalize.clip_obs == 10.0


def test_the_hyperparameter_table_matches_each_algorithms_constructor():
    import inspect

    from manip_rl.policies.algorithms import ALGORITHMS, algorithm_class
    from manip_rl.policies.train_config import HYPERPARAMS

    not_hyper = {"self", "policy", "env", "policy_kwargs", "seed", "device", "verbose",
                 "tensorboard_log", "_init_setup_model", "rollout_buffer_class",
                 "rollout_buffer_kwargs", "kl_coef_bounds"}  # fmt: skip
    for algo in ALGORITHMS:
        params = set(inspect.signature(algorithm_class(algo).__init__).parameters) - not_hyper
        assert set(HYPERPARAMS[algo]) == params, algo


def test_yaml_numbers_without_a_dot_are_numbers():
    """YAML 1.1 reads 3e-4 as a string; the check makes it the number the user meant."""
    from manip_rl.policies import config as cfgmod

    cfg = cfgmod.load_config("PandaReach", "ppo")
    checked = cfgmod.validate(
        {**cfg, "hyperparams": {**cfg["hyperparams"], "learning_rate": "3e-4"}}
    )
    assert checked["hyperparams"]["learning_rate"] == 3e-4


def test_randomization_none_is_the_explicit_way_off(tmp_path):
    from manip_rl.envs.randomization import RandomizationConfigError, load_config

    assert load_config("none", "reach") is None
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(RandomizationConfigError, match="randomization: none") as e:
        load_config(str(empty), "reach")
    assert "empty.yaml" in str(e.value)


# ------------------------------------------------------------------------------------ the figure
def test_every_bad_input_is_refused_naming_the_field(tmp_path):
    """Issue 20's figure: bad files and configs, refused with the field named / total, and run
    directories left behind."""
    rows: list[tuple[str, bool, bool]] = []  # (case, refused naming the field, run dir left)
    for case, src, edit, field in METADATA_CASES:
        path = _edited_torchscript(src, tmp_path / f"{case}.pt", edit)
        message = _refusal_of(lambda p=path: load_policy(p))
        rows.append((f"file:{case}", message is not None and field in message, False))
    for case, src, edit, field in ONNX_CASES:
        path = _edited_onnx(src, tmp_path / f"{case}.onnx", edit)
        message = _refusal_of(lambda p=path: load_policy(p))
        rows.append((f"onnx:{case}", message is not None and field in message, False))
    for case, make, expected in RUN_CASES:
        for command, fn in sorted(COMMANDS.items()):
            root = tmp_path / f"{case}_{command}"
            root.mkdir()
            message = _refusal_of(fn(make(root), root))
            rows.append((f"run:{case}:{command}", message is not None and expected in message,
                         False))  # fmt: skip
    for case, args, key in CONFIG_CASES:
        root = tmp_path / f"cfg_{case}"
        root.mkdir()
        message, left = _train_refusal(root, args(root))
        rows.append((f"config:{case}", message is not None and key in message, left))
    refused = sum(ok for _, ok, _ in rows)
    left = sum(d for _, _, d in rows)
    print(f"\nbad files and configs: {refused}/{len(rows)} refused with the field named; "
          f"{left} run directories left behind")  # fmt: skip
    failed = [case for case, ok, d in rows if not ok or d]
    assert not failed, failed
