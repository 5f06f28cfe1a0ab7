"""How an export writes its file (issue 20, defect 7): the archive's inner name is the file's own,
a failed or killed export leaves no temporary behind, and the next export clears what a killed
one left."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

import manip_rl
from manip_rl.export import _atomic_export, convert_policy_file, load_policy

pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit.*deprecated:DeprecationWarning")

PUSH = Path(manip_rl.__file__).parent / "policies" / "pretrained" / "panda_push.pt"


def _export_again(src: Path, out: Path) -> None:
    """Write ``src`` anew through the exporter's own TorchScript writer."""
    from manip_rl.export import Exported, _write_torchscript

    policy = load_policy(src, optimize=False)
    _write_torchscript(Exported(policy.module, policy.metadata, None, None), str(out))  # type: ignore[arg-type]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_archive_is_named_after_the_file_not_a_temporary(tmp_path):
    out = tmp_path / "policy.pt"
    _export_again(PUSH, out)
    with zipfile.ZipFile(out) as z:
        folders = {n.split("/")[0] for n in z.namelist()}
    assert folders == {"policy"}, folders  # was ".policy.<random>.tmp"
    assert sorted(os.listdir(tmp_path)) == ["policy.pt"]
    load_policy(out)


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    out = tmp_path / "policy.pt"
    with pytest.raises(RuntimeError, match="disk full"), _atomic_export(str(out)) as tmp:
        Path(tmp).write_bytes(b"half a file")
        raise RuntimeError("disk full")
    assert os.listdir(tmp_path) == []


def test_the_next_export_removes_what_a_killed_one_left(tmp_path):
    # A killed export of this code: a partial folder named after a dead writer's pid.
    dead = tmp_path / f".policy.pt.{_dead_pid()}.partial"
    dead.mkdir()
    (dead / "policy.pt").write_bytes(b"half")
    # One of a live writer (this process's parent): left alone.
    live = tmp_path / f".policy.pt.{os.getppid()}.partial"
    live.mkdir()
    # A killed export of the code before (manip_rl.fileio.atomic_path), an hour old.
    legacy = tmp_path / ".policy.k3j4h5g6.tmp.pt"
    legacy.write_bytes(b"half")
    hour_ago = time.time() - 3600
    os.utime(legacy, (hour_ago, hour_ago))
    fresh = tmp_path / ".policy.a1b2c3d4.tmp.pt"  # maybe another writer's, still at work
    fresh.write_bytes(b"half")
    other = tmp_path / ".other.a1b2c3d4.tmp.pt"  # not this file's
    other.write_bytes(b"x")
    os.utime(other, (hour_ago, hour_ago))

    _export_again(PUSH, tmp_path / "policy.pt")
    assert sorted(os.listdir(tmp_path)) == sorted(["policy.pt", live.name, fresh.name, other.name])


def test_onnx_conversion_writes_the_same_way(tmp_path):
    out = tmp_path / "policy.onnx"
    convert_policy_file(PUSH, out, samples=200)
    assert sorted(os.listdir(tmp_path)) == ["policy.onnx"]
    assert load_policy(out).format == "onnx"
