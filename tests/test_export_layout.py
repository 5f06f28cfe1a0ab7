"""The layout of ``manip_rl.export`` (issue 15): the policy file format and loader are the only
export code the robot side imports, importing them pulls in none of the training stack, and
every name ``manip_rl.export`` offered as one module is still importable from the package."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import manip_rl
import manip_rl.export

ROOT = Path(manip_rl.__file__).parent
PRETRAINED = ROOT / "policies" / "pretrained"
TRAINING_STACK = ("stable_baselines3", "sb3_contrib", "gymnasium", "gymnasium_robotics", "mujoco")

# A robot's interpreter: Gymnasium is not installed (its import fails, as manip_rl's own
# __init__ expects there); the rest of the training stack is importable, and every attempt to
# import it is recorded with the file that asked, so a loader that imported (or merely tried)
# SB3 or MuJoCo is caught even though it would succeed here.
_ROBOT_SIDE_SCRIPT = r"""
import importlib.abc, json, sys
STACK = tuple(sys.argv[1].split(","))
attempts = []

class Record(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in STACK:
            return None
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_filename.startswith("<frozen"):
            frame = frame.f_back
        attempts.append([name, frame.f_code.co_filename if frame else "?"])
        if name.split(".")[0] == "gymnasium":
            raise ModuleNotFoundError(f"{name} is not installed on this robot", name=name)
        return None

sys.meta_path.insert(0, Record())
import numpy as np
from manip_rl.export.policy_file import load_policy, read_metadata
from manip_rl.export import LoadedPolicy, PolicyFileError, load_policy as root_load_policy
assert root_load_policy is load_policy
actions = {}
for path in sys.argv[2:]:
    policy = load_policy(path)
    assert isinstance(policy, LoadedPolicy)
    actions[path] = policy.act(np.zeros(policy.obs_dim, dtype=np.float32)).tolist()
    read_metadata(path)
print(json.dumps({
    "stack_loaded": sorted(m for m in sys.modules if m.split(".")[0] in STACK),
    "attempts": attempts,
    "export_modules": sorted(m for m in sys.modules if m.startswith("manip_rl.export")),
    "actions": actions,
}))
"""


def test_loader_imports_nothing_of_the_training_stack():
    files = sorted(str(p) for p in PRETRAINED.glob("*.pt"))
    assert len(files) == 3
    proc = subprocess.run(
        [sys.executable, "-c", _ROBOT_SIDE_SCRIPT, ",".join(TRAINING_STACK), *files],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["stack_loaded"] == []
    # The one attempt is manip_rl's own guarded registration import, which fails on a robot.
    assert [name for name, _ in out["attempts"]] == ["gymnasium"], out["attempts"]
    assert Path(out["attempts"][0][1]) == ROOT / "__init__.py"
    # Only the format and its metadata checks: building, writing and verifying stay unloaded.
    assert out["export_modules"] == [
        "manip_rl.export",
        "manip_rl.export.metadata",
        "manip_rl.export.policy_file",
    ]
    for path, action in out["actions"].items():
        assert len(action) > 0 and all(-1.0 <= a <= 1.0 for a in action), path


def test_shipped_files_load_though_their_code_names_the_old_module():
    # TorchScript files carry their own code, named after the Python module that defined the
    # class when they were exported (manip_rl/export.py, gone now): loading must not need it.
    from manip_rl.export.policy_file import load_policy

    for path in sorted(PRETRAINED.glob("*.pt")):
        with zipfile.ZipFile(path) as z:
            assert any(n.endswith("code/__torch__/manip_rl/export.py") for n in z.namelist())
        policy = load_policy(path)  # checks the weights hash and the module's normalizer
        assert policy.module.original_name == "FlatPolicy"
        assert len(policy.weights_sha256) == 64


def test_robot_side_imports_only_the_policy_file_module():
    # The bridge may use the format and its loader, nothing that builds or verifies files.
    found = []
    for source in sorted((ROOT / "ros_bridge").glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text(), str(source))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "manip_rl.export"
            ):
                found.append((source.name, node.module))
            elif isinstance(node, ast.Import):
                found += [
                    (source.name, a.name)
                    for a in node.names
                    if a.name.startswith("manip_rl.export")
                ]
    assert found, "the bridge loads policy files through manip_rl.export.policy_file"
    assert {module for _, module in found} == {"manip_rl.export.policy_file"}, found


OLD_NAMES = (
    # the names manip_rl/export.py offered that callers in the repo, bench/ and docs use
    "DICT_KEYS FORMATS METADATA_FILE ONNX_WEIGHTS_KEY PARITY_TOLERANCE SCHEMA_VERSION "
    "ExportError Exported FlatPolicy FusedMLP LoadedPolicy PolicyFileError PolicySource "
    "add_arguments build_export check_closed_loop check_isolated check_parity "
    "collect_observations convert_policy_file export_policy load_policy parity_observations "
    "read_metadata run sb3_actions source_from_run task_of verify weights_sha256 "
    "_atomic_export _dict_keys_and_sizes _write_onnx _write_torchscript"
).split()


@pytest.mark.parametrize("name", OLD_NAMES)
def test_every_old_name_is_importable_from_the_package(name):
    value = getattr(manip_rl.export, name)
    assert value is not None
    assert name in dir(manip_rl.export)
    if not name.startswith("_"):
        assert name in manip_rl.export.__all__


def test_verify_is_the_function_not_its_module():
    import manip_rl.export.verification  # noqa: F401  (sets the package's submodule attribute)
    from manip_rl.export import verify

    assert callable(verify) and verify.__module__ == "manip_rl.export.verification"


def test_unknown_name_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="no attribute 'export_polcy'"):
        manip_rl.export.export_polcy  # noqa: B018


def test_cli_export_help(capsys):
    from manip_rl.cli import main

    with pytest.raises(SystemExit) as e:
        main(["export", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--format" in out and "--verify" in out and "torchscript" in out
