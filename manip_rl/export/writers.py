"""Writing a built export to disk: TorchScript (:func:`_write_torchscript`) or ONNX
(:func:`_write_onnx`), each atomically (:func:`_atomic_export`)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from manip_rl.export.policy_file import (
    METADATA_FILE,
    ONNX_WEIGHTS_KEY,
    _onnx_weights_sha256,
    _quiet_jit,
)
from manip_rl.fileio import commit

if TYPE_CHECKING:
    from manip_rl.export.build import Exported

# A write in progress: RUN/.policy.pt.<pid>.partial/policy.pt (see _atomic_export).
_PARTIAL = ".partial"
# Temporary files of manip_rl.fileio.atomic_path (what exports wrote before): .policy.XXXX.tmp.pt
_STALE_AFTER_S = 600.0


@contextlib.contextmanager
def _atomic_export(out_path: str) -> Iterator[str]:
    """Yield a temporary path whose file name is ``out_path``'s own, in a hidden folder beside
    it; on success it is fsynced and renamed over ``out_path``, on any failure removed.

    The name matters: torch.jit.save names the archive's inner folder after the file (a temp
    name would leak into every exported file). The folder carries the writer's pid, so leftovers
    of a killed export are recognised and removed by the next export to the same place."""
    out_path = os.path.abspath(out_path)
    directory, base = os.path.split(out_path)
    os.makedirs(directory, exist_ok=True)
    _remove_stale_partials(directory, base)
    tmpdir = os.path.join(directory, f".{base}.{os.getpid()}{_PARTIAL}")
    shutil.rmtree(tmpdir, ignore_errors=True)
    os.mkdir(tmpdir)
    tmp = os.path.join(tmpdir, base)
    try:
        yield tmp
        commit(tmp, out_path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _remove_stale_partials(directory: str, base: str) -> None:
    """Remove what killed exports of ``base`` left in ``directory``: partial folders whose
    writer is no longer alive, and atomic_path temporaries older than ten minutes."""
    import time

    stem, ext = os.path.splitext(base)
    ours = re.compile(rf"^\.{re.escape(base)}\.(\d+){re.escape(_PARTIAL)}$")
    legacy = re.compile(rf"^\.{re.escape(stem)}\.[A-Za-z0-9_]+\.tmp{re.escape(ext)}$")
    for name in os.listdir(directory):
        p = os.path.join(directory, name)
        m = ours.match(name)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True)
        elif legacy.match(name):
            with contextlib.suppress(OSError):
                if time.time() - os.path.getmtime(p) > _STALE_AFTER_S:
                    os.unlink(p)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _write_torchscript(exported: Exported, out_path: str) -> None:
    with _quiet_jit():
        scripted = torch.jit.script(exported.module)
    text = json.dumps(exported.metadata, indent=1)
    with _atomic_export(out_path) as tmp:
        with _quiet_jit():
            torch.jit.save(scripted, tmp, _extra_files={METADATA_FILE: text})


def _write_onnx(exported: Exported, out_path: str) -> None:
    import io

    import onnx

    md = exported.metadata
    # A stateful module takes its state after the observation and returns it after the action
    # (state in, state out), each with the batch first; names from the metadata's memory.
    states = [(st["name"], st["shape"]) for st in (md.get("memory") or {}).get("state", [])]
    inputs = (
        torch.zeros(1, int(md["observation"]["dim"])),
        *(torch.zeros(1, *shape) for _, shape in states),
    )
    input_names = ["obs", *(n for n, _ in states)]
    output_names = ["action", *(f"{n}_out" for n, _ in states)]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated
        torch.onnx.export(
            exported.module,
            inputs,
            buf,
            dynamo=False,
            input_names=input_names,
            output_names=output_names,
            dynamic_axes={n: {0: "batch"} for n in (*input_names, *output_names)},
            opset_version=17,
        )
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model)
    del model.metadata_props[:]
    for key, value in (
        (METADATA_FILE, json.dumps(md, indent=1)),
        (ONNX_WEIGHTS_KEY, _onnx_weights_sha256(model)),
    ):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    model.producer_name = "manip_rl"
    with _atomic_export(out_path) as tmp:
        onnx.save(model, tmp)
