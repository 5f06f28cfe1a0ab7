"""The launch files name executables, subcommands and parameter files that exist, and every
parameter in the YAML files is one the named node declares (a typo would be silently ignored by
ROS 2). `launch`/`launch_ros` are not on PyPI, so the files are read as Python source here."""

from __future__ import annotations

import ast
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from manip_rl import cli
from manip_rl.ros_bridge import dds

LAUNCH_DIR = dds.REPO_ROOT / "launch"
LAUNCH_FILES = sorted(LAUNCH_DIR.glob("*.launch.py"))
NODE_OF_SUBCOMMAND = {"serve": "policy_bridge", "sim-arm": "sim_arm"}


def _cmd_lists(tree: ast.AST) -> list[ast.List]:
    """The ``cmd=[...]`` list of every ExecuteProcess call."""
    return [
        kw.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "ExecuteProcess"
        for kw in node.keywords
        if kw.arg == "cmd" and isinstance(kw.value, ast.List)
    ]


def _commands(tree: ast.AST) -> list[list[str]]:
    """The string parts of every ``cmd=[...]`` list in an ExecuteProcess call."""
    return [[e.value for e in cmd.elts if isinstance(e, ast.Constant)] for cmd in _cmd_lists(tree)]


def _yaml_files(tree: ast.AST) -> list[str]:
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.endswith(".yaml")
    ]


def test_there_are_sim_and_robot_launch_files():
    assert {p.name for p in LAUNCH_FILES} >= {"sim.launch.py", "robot.launch.py"}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_names_existing_executables_and_parameter_files(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in names
    commands = _commands(tree)
    assert commands, f"{path.name} starts no process"
    bin_dir = Path(sys.executable).parent
    for cmd in commands:
        exe, sub = cmd[0], cmd[1]
        assert shutil.which(exe) or (bin_dir / exe).exists(), f"{path.name}: no executable {exe}"
        assert sub in cli.COMMANDS, f"{path.name}: `{exe} {sub}` is not a manip-rl subcommand"
    yamls = _yaml_files(tree)
    assert yamls, f"{path.name} names no parameter file"
    for name in yamls:
        assert (LAUNCH_DIR / "config" / name).is_file(), f"{path.name}: config/{name} missing"
        # Each node a launch file starts has a section in its parameter file.
        sections = yaml.safe_load((LAUNCH_DIR / "config" / name).read_text())
        for cmd in commands:
            assert NODE_OF_SUBCOMMAND[cmd[1]] in sections, f"{name} has no {cmd[1]} section"


@pytest.mark.parametrize(
    "path", sorted((LAUNCH_DIR / "config").glob("*.yaml")), ids=lambda p: p.name
)
def test_parameter_files_only_set_declared_parameters(path: Path):
    pytest.importorskip("rclpy")
    from manip_rl.ros_bridge import policy_bridge, sim_arm

    declared = {"policy_bridge": policy_bridge.PARAMETERS, "sim_arm": sim_arm.PARAMETERS}
    data = yaml.safe_load(path.read_text())
    assert data, f"{path} is empty"
    for node, section in data.items():
        assert node in declared, f"{path.name}: unknown node {node!r}"
        params = section["ros__parameters"]
        unknown = set(params) - set(declared[node])
        assert not unknown, f"{path.name}: {node} has no parameter(s) {sorted(unknown)}"
        for key, value in params.items():
            default = declared[node][key]
            # ROS 2 parameters are typed: the file's value must have the declared type.
            assert type(value) is type(default), f"{path.name}: {node}.{key}={value!r} type"


def test_cli_builds_the_ros_arguments_a_launch_file_would_pass(tmp_path):
    pytest.importorskip("rclpy")
    import argparse

    from manip_rl.ros_bridge import policy_bridge

    policy = tmp_path / "p.pt"
    policy.write_bytes(b"x")
    p = argparse.ArgumentParser()
    policy_bridge.add_arguments(p)
    # As robot.launch.py runs it, with the launch argument `policy` left empty.
    args = p.parse_args(
        ["--params-file", str(dds.ROBOT_PARAMS), "--ros-args", "-p", "policy:=", "-p", "x:=1"]
    )
    out = policy_bridge.ros_arguments(args, dds.SIM_PARAMS)
    assert out == ["--ros-args", "--params-file", str(dds.ROBOT_PARAMS), "-p", "x:=1"]
    args = p.parse_args(["--policy", str(policy), "--autostart"])
    out = policy_bridge.ros_arguments(args, dds.SIM_PARAMS)
    assert out == [
        "--ros-args", "--params-file", str(dds.SIM_PARAMS),
        "-p", f"policy:={policy.resolve()}", "-p", "autostart:=true",
    ]  # fmt: skip
    with pytest.raises(SystemExit, match="nope.yaml"):
        policy_bridge.ros_arguments(p.parse_args(["--params-file", "nope.yaml"]), dds.SIM_PARAMS)


def _joined_options(tree: ast.AST) -> list[list[str]]:
    """Per ExecuteProcess, the options written as ``["--opt=", LaunchConfiguration(...)]``."""
    return [
        [
            e.elts[0].value
            for e in cmd.elts
            if isinstance(e, ast.List) and isinstance(e.elts[0], ast.Constant)
        ]
        for cmd in _cmd_lists(tree)
    ]


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_files_pass_cpu_pinning_that_the_cli_accepts_at_its_defaults(path: Path):
    """Every node a launch file starts takes --cpus and --rt-priority from launch arguments; at
    the launch defaults ('' and 0) the CLI parses them and pins nothing."""
    pytest.importorskip("rclpy")
    import argparse

    from manip_rl.ros_bridge import policy_bridge, sim_arm

    tree = ast.parse(path.read_text(), filename=str(path))
    defaults = {
        n.args[0].value: k.value.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "DeclareLaunchArgument"
        for k in n.keywords
        if k.arg == "default_value" and isinstance(k.value, ast.Constant)
    }
    adders = {"serve": policy_bridge.add_arguments, "sim-arm": sim_arm.add_arguments}
    for cmd, options in zip(_commands(tree), _joined_options(tree), strict=True):
        assert options[:2] == ["--cpus=", "--rt-priority="], f"{path.name}: {cmd[1]} {options}"
        p = argparse.ArgumentParser()
        adders[cmd[1]](p)
        cpus = next(v for k, v in defaults.items() if k.endswith("cpus"))
        args = p.parse_args([f"--cpus={cpus}", f"--rt-priority={defaults['rt_priority']}"])
        assert dds.apply_realtime_arguments(args) == []
        with pytest.raises(SystemExit, match="not a CPU number"):
            dds.apply_realtime_arguments(p.parse_args(["--cpus=x"]))


def test_fr3_parameters_name_franka_ros2s_interfaces():
    """launch/config/fr3.yaml: franka_ros2's arm controller (a joint_trajectory_controller) and
    the FR3 profile, the trajectory output (franka_ros2 has no forward command controller)."""
    params = yaml.safe_load((LAUNCH_DIR / "config" / "fr3.yaml").read_text())
    bridge = params["policy_bridge"]["ros__parameters"]
    assert bridge["robot"] == "fr3" and bridge["output"] == "trajectory"
    assert bridge["trajectory_topic"] == "/fr3_arm_controller/joint_trajectory"
    from manip_rl.ros_bridge.profiles import PROFILE_DEFAULTS

    assert PROFILE_DEFAULTS["fr3"]["trajectory_topic"] == bridge["trajectory_topic"]
