"""The task registry: one spec per task module, found by discovery, and the one place where the
scene, layouts, export, ADR, training configuration and CLI learn about tasks."""

from __future__ import annotations

import os
import sys
import textwrap

import gymnasium as gym
import pytest

import manip_rl  # noqa: F401  (registers the envs)
from manip_rl import export, policy_io
from manip_rl.envs import registry
from manip_rl.envs.randomization import load_config as load_randomization
from manip_rl.envs.spec import TaskSpec
from manip_rl.policies import config
from manip_rl.policies.algorithms import ALGORITHMS
from manip_rl.transfer import adr_run

SPECS = list(registry.tasks().values())


def test_the_three_original_tasks_keep_their_ids_and_contract():
    expected = {
        "PandaReach": ("reach", 50, False, False, 30),
        "PandaPush": ("push", 100, True, True, 42),
        "PandaPickPlace": ("pick_place", 100, True, True, 42),
    }
    for name, (key, steps, has_object, gripper, flat_dim) in expected.items():
        spec = registry.get(name)
        assert (spec.key, spec.episode_steps, spec.has_object, spec.gripper) == (
            key,
            steps,
            has_object,
            gripper,
        )
        assert spec.env_ids == (f"manip_rl/{name}-v0", f"manip_rl/{name}Dense-v0")
        assert spec.layout(8 if gripper else 7).flat_dim == flat_dim


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_every_part_reads_the_same_spec(spec):
    for env_id in spec.env_ids:
        assert registry.get(env_id) is spec
        assert export.task_of(env_id) == spec.key
        assert adr_run.task_of_config({"env_id": env_id}) == spec.key
        assert config.task_name(env_id) == spec.name
    assert registry.get(spec.key) is spec and registry.get(spec.name) is spec
    env = gym.make(spec.env_id)
    base = env.unwrapped
    assert base.task_spec is spec and base.task == spec.key
    assert base.action_spec.mode == spec.default_action_mode
    assert base.has_gripper == spec.gripper
    assert (base.ids.object_body >= 0) == spec.has_object
    assert base.layout == spec.layout(base.action_spec.dim)
    assert [f.name for f in base.layout.observation] == list(spec.observation)
    assert registry.scripted_controller(env) is not None
    env.close()
    assert os.path.isfile(spec.randomization_path), spec.randomization_path
    assert load_randomization("default", spec.key) is not None
    for algo in ALGORITHMS:
        cfg = config.load_config(spec.name, algo)
        config.validate({**cfg, "total_timesteps": 1000})
        assert registry.get(cfg["env_id"]) is spec
        assert cfg["hyperparams"], f"{spec.train_file} has no algorithms.{algo} section"


def test_names_keys_and_ids_resolve_and_unknown_ones_name_the_known():
    assert registry.get("manip_rl/PandaPushDense-v0").key == "push"
    assert registry.get("PandaPushDense").key == "push"
    with pytest.raises(registry.UnknownTaskError, match="PandaPush"):
        registry.get("PandaPull")
    with pytest.raises(config.ConfigError, match="PandaPull.*unknown"):
        config.task_name("PandaPull")
    with pytest.raises(export.ExportError, match="not a manip_rl task"):
        export.task_of("manip_rl/PandaPull-v0")


def test_a_spec_with_a_field_policy_io_does_not_build_is_refused_at_import():
    with pytest.raises(ValueError, match="'joint_torque'.*unknown"):
        TaskSpec(
            name="PandaBad",
            key="bad",
            entry_point="x:Y",
            episode_steps=10,
            has_object=False,
            gripper=False,
            observation=("joint_pos", "joint_torque", "prev_action"),
            achieved_goal="ee_pos",
        )
    with pytest.raises(ValueError, match="default_action_mode"):
        TaskSpec(
            name="PandaBad",
            key="bad",
            entry_point="x:Y",
            episode_steps=10,
            has_object=False,
            gripper=False,
            observation=("joint_pos", "prev_action"),
            achieved_goal="ee_pos",
            default_action_mode="torque",
        )


def test_reward_scales_are_read_only():
    with pytest.raises(TypeError):
        registry.get("push").reward_scales["place"] = 10.0  # type: ignore[index]


def test_a_new_task_module_is_found_with_no_edit_elsewhere(tmp_path, monkeypatch):
    """Discovery: a package holding one module with a TASK is all the registry needs."""
    package = tmp_path / "more_tasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_helpers.py").write_text("X = 1\n")  # private modules are skipped
    (package / "spin.py").write_text(
        textwrap.dedent(
            """
            from manip_rl.envs.spec import TaskSpec
            from manip_rl.envs.tasks.push import CUBE_OBSERVATION

            TASK = TaskSpec(
                name="PandaSpin", key="spin", entry_point="manip_rl.envs.tasks.push:PandaPushEnv",
                episode_steps=30, has_object=True, gripper=True, observation=CUBE_OBSERVATION,
                achieved_goal="object_pos", randomization_file="randomization/push.yaml",
            )
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "TASKS_PACKAGE", "more_tasks")
    found = registry.tasks.__wrapped__()  # the uncached discovery
    assert list(found) == ["PandaSpin"]
    spec = found["PandaSpin"]
    assert spec.env_ids == ("manip_rl/PandaSpin-v0", "manip_rl/PandaSpinDense-v0")
    assert (
        spec.layout(4).flat_dim
        == policy_io.layout_from_fields("spin", spec.observation, "object_pos", 4).flat_dim
    )
    sys.modules.pop("more_tasks.spin", None)
    sys.modules.pop("more_tasks", None)


def test_two_tasks_with_one_name_are_refused(tmp_path, monkeypatch):
    package = tmp_path / "twin_tasks"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module in ("a", "b"):
        (package / f"{module}.py").write_text(
            "from manip_rl.envs.tasks.reach import TASK\n"  # both modules export Reach's spec
        )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "TASKS_PACKAGE", "twin_tasks")
    with pytest.raises(ValueError, match="twin_tasks.b: task name 'PandaReach' is defined twice"):
        registry.tasks.__wrapped__()
    for m in ("twin_tasks.a", "twin_tasks.b", "twin_tasks"):
        sys.modules.pop(m, None)


def test_manip_rl_envs_lists_every_task_from_the_registry(capsys):
    from manip_rl.cli import main

    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for spec in SPECS:
        assert f"{spec.name} ({spec.key};" in out
        for env_id in spec.env_ids:
            assert env_id in out
