"""Export: freeze a trained policy into one self-describing file, load it on a robot, and prove
that it behaves like the trained policy. One module per job:

- :mod:`~manip_rl.export.policy_file`: the file format and its loader (:func:`load_policy`,
  :class:`LoadedPolicy`, :func:`read_metadata`); all that the robot side imports.
- :mod:`~manip_rl.export.metadata`: the checks the metadata passes before a file may act
  (:class:`PolicyFileError`).
- :mod:`~manip_rl.export.build` (with :mod:`~manip_rl.export.flat_policy` and
  :mod:`~manip_rl.export.writers`): from SB3 to a written file (:func:`export_policy`,
  :func:`convert_policy_file`).
- :mod:`~manip_rl.export.verification`: parity, closed loop, isolation (:func:`verify`).
- :mod:`~manip_rl.export.cli`: ``manip-rl export``.

Importing this package loads the loader only (torch and numpy); the other names here are
imported on first use, so the robot side never pays for, or needs, stable-baselines3, Gymnasium
or MuJoCo.
"""

from __future__ import annotations

import importlib
from typing import Any

from manip_rl.export.metadata import PolicyFileError
from manip_rl.export.policy_file import (
    DICT_KEYS,
    FORMATS,
    METADATA_FILE,
    ONNX_WEIGHTS_KEY,
    SCHEMA_VERSION,
    LoadedPolicy,
    load_policy,
    read_metadata,
    weights_sha256,
)

# name -> the submodule that defines it, imported when the name is first used
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        (
            "ExportError",
            "Exported",
            "PolicySource",
            "build_export",
            "convert_policy_file",
            "export_policy",
            "source_from_run",
            "task_of",
            "_dict_keys_and_sizes",
        ),
        "build",
    ),
    **dict.fromkeys(("FlatPolicy", "FusedMLP", "HistoryPolicy", "RecurrentPolicy"), "flat_policy"),
    **dict.fromkeys(("_atomic_export", "_write_onnx", "_write_torchscript"), "writers"),
    **dict.fromkeys(
        (
            "PARITY_TOLERANCE",
            "check_closed_loop",
            "check_episode_parity",
            "check_isolated",
            "check_parity",
            "collect_observations",
            "parity_observations",
            "sb3_actions",
            "verify",
        ),
        "verification",
    ),
    **dict.fromkeys(("add_arguments", "run"), "cli"),
}

__all__ = [
    "DICT_KEYS",
    "FORMATS",
    "METADATA_FILE",
    "ONNX_WEIGHTS_KEY",
    "SCHEMA_VERSION",
    "LoadedPolicy",
    "PolicyFileError",
    "load_policy",
    "read_metadata",
    "weights_sha256",
    *(name for name in _LAZY if not name.startswith("_")),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
