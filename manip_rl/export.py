"""``manip-rl export``: freeze a trained policy into one self-describing file, load it on a robot,
and prove that it behaves like the trained policy.

The file (``policy.pt``) is a TorchScript module::

    forward(obs: float32[B, obs_dim]) -> float32[B, act_dim]

taking the flat observation ``policy_io.flatten_observation(obs)`` (achieved_goal | desired_goal |
observation) and returning the deterministic action in [-1, 1], with the VecNormalize observation
normalization and clipping baked in. The TorchScript extra file ``manip_rl.json`` holds the
metadata (schema version 1, see :func:`build_export` and ``docs/export.md``), including
``weights_sha256`` (:func:`weights_sha256`), which :func:`load_policy` checks.

Loading (:func:`load_policy`) needs torch and numpy only: this module imports stable-baselines3,
Gymnasium and MuJoCo only inside the functions that export and verify.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from importlib import metadata as _importlib_metadata
from typing import Any, Final

import numpy as np
import torch
from torch import nn

from manip_rl import policy_io
from manip_rl.policy_metadata import (
    PolicyFileError,
    check_onnx_matches_metadata,
    expected_normalizer,
    narrowed_limits,
    robot_of,
    validate_metadata,
)
from manip_rl.stats import wilson_interval

SCHEMA_VERSION: Final = 1
METADATA_FILE: Final = "manip_rl.json"  # TorchScript extra file / ONNX metadata_props key
ONNX_WEIGHTS_KEY: Final = "manip_rl.onnx_weights_sha256"  # hash of the ONNX initializers
FORMATS: Final = ("torchscript", "onnx")
# The flat policy input is the Dict observation's keys in this order (SB3's sorted order).
DICT_KEYS: Final = ("achieved_goal", "desired_goal", "observation")
_PACKAGES: Final = (
    "manip_rl",
    "torch",
    "numpy",
    "stable-baselines3",
    "sb3-contrib",
    "gymnasium",
    "gymnasium-robotics",
    "mujoco",
    "onnx",
    "onnxruntime",
)
PARITY_TOLERANCE: Final = 1e-5


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """torch 2.9+ warns on every torch.jit call that it is deprecated; TorchScript is still the
    format a robot loads without Python model code, so keep users' logs clean."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit.*deprecated", DeprecationWarning)
        yield


class ExportError(ValueError):
    """A model that cannot be exported; the message says what is unsupported and what to do."""


# --------------------------------------------------------------------------------- the module
class FusedMLP(nn.Module):
    """An SB3 MLP actor (Linear, activation, ..., Linear) as one chain of ``addmm`` calls with
    in-place activations: at batch 1 each op and each allocation costs, and this form measured
    about 5% faster than the module chain after ``optimize_for_inference`` (which it therefore
    skips, see :func:`load_policy`). It holds SB3's Linear layers themselves.
    """

    __constants__ = ["tanh"]

    def __init__(self, linears: list[nn.Linear], tanh: bool) -> None:
        super().__init__()
        self.layers = nn.ModuleList(linears)
        self.tanh = tanh
        self.n_hidden = len(linears) - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = torch.addmm(layer.bias, x, layer.weight.t())
            if i < self.n_hidden:
                x = x.tanh_() if self.tanh else x.relu_()
        return x

    @staticmethod
    def of(actor: nn.Module) -> FusedMLP | None:
        """The fused form of ``Sequential(Sequential(Linear, act, ...), Linear)`` with one
        activation throughout (Tanh or ReLU); None for anything else."""
        mods = [m for part in actor for m in (part if isinstance(part, nn.Sequential) else [part])]
        linears, acts = mods[0::2], mods[1::2]
        kinds = {type(a) for a in acts}
        if (
            not all(type(m) is nn.Linear for m in linears)
            or len(linears) != len(acts) + 1
            or len(kinds) > 1
            or not kinds <= {nn.Tanh, nn.ReLU}
        ):
            return None
        return FusedMLP(linears, tanh=kinds == {nn.Tanh} or not kinds)


class FlatPolicy(nn.Module):
    """What a policy file holds: normalizer, the actor MLP and the deterministic action head.

    Normalization runs in float64, as VecNormalize does in numpy, so that observations far from
    the training statistics (where ``(obs - mean) / std`` amplifies rounding) give the same
    clipped input as in training; the MLP runs in float32, as SB3's policy does. It is written
    as ``obs * scale + shift`` (``scale = 1 / sqrt(var + eps)``, ``shift = -mean * scale``), one
    fused op, since at batch 1 each op costs microseconds.
    """

    # Folded by torch.jit.freeze, so the branches cost nothing at run time.
    __constants__ = ["normalize", "clip_per_dim", "clip_obs", "squash", "fused"]

    def __init__(
        self,
        actor: nn.Module,
        obs_dim: int,
        act_dim: int,
        squash: bool,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
        clip_obs: float = 10.0,
        normalized: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        fused = FusedMLP.of(actor)
        self.fused = fused is not None
        self.actor = fused if fused is not None else actor
        self.normalize = mean is not None
        self.squash = bool(squash)
        self.clip_obs = float(clip_obs)
        if mean is None or std is None:
            mean, std = np.zeros(obs_dim), np.ones(obs_dim)
        if normalized is None:
            normalized = np.ones(obs_dim, dtype=bool)
        # Entries VecNormalize leaves alone (norm_obs_keys without them) pass through unclipped.
        self.clip_per_dim = not bool(np.all(normalized))
        scale = np.where(normalized, 1.0 / np.asarray(std, dtype=np.float64), 1.0)
        shift = np.where(normalized, -np.asarray(mean, dtype=np.float64) * scale, 0.0)
        low = np.where(normalized, -self.clip_obs, -np.inf)
        high = np.where(normalized, self.clip_obs, np.inf)
        f64 = torch.float64
        self.register_buffer("obs_scale", torch.as_tensor(scale, dtype=f64))
        self.register_buffer("obs_shift", torch.as_tensor(shift, dtype=f64))
        self.register_buffer("obs_clip_low", torch.as_tensor(low, dtype=f64))
        self.register_buffer("obs_clip_high", torch.as_tensor(high, dtype=f64))
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs
        if self.normalize:
            # float32 obs * float64 scale promotes to float64 inside the one op (exact upcast).
            x64 = torch.addcmul(self.obs_shift, x, self.obs_scale)
            if self.clip_per_dim:
                x64 = torch.clamp(x64, self.obs_clip_low, self.obs_clip_high)
            else:
                x64 = torch.clamp(x64, -self.clip_obs, self.clip_obs)
            x = x64.to(torch.float32)
        a = self.actor(x)
        if self.squash:
            # gSDE with squash_output: the mode is tanh(mean); unscaling [-1, 1] to the action
            # space bounds [-1, 1] is the identity.
            return torch.tanh(a)
        # SB3's predict clips the Gaussian mean to the action space bounds.
        return torch.clamp(a, -1.0, 1.0)


def weights_sha256(module: nn.Module) -> str:
    """SHA-256 of every state_dict entry (parameters and buffers, so the normalization statistics
    too), in sorted name order; each entry contributes ``name NUL dtype NUL shape NUL`` and then
    its values as contiguous little-endian bytes."""
    h = hashlib.sha256()
    state = module.state_dict()
    for name in sorted(state):
        arr = state[name].detach().cpu().contiguous().numpy()
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        h.update(f"{name}\0{arr.dtype.str}\0{list(arr.shape)}\0".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------- loading
@dataclasses.dataclass
class LoadedPolicy:
    """A policy file ready to act. ``act(obs)`` takes the env's dict observation
    (``observation``, ``achieved_goal``, ``desired_goal``) or the flat vector, shape (obs_dim,)
    or (B, obs_dim), and returns the deterministic action in [-1, 1], shape (act_dim,) or
    (B, act_dim). ``make_env()`` builds the env the file was trained for (its task, action mode
    and episode length). At batch 1 it acts through buffers it owns: call it from one thread at a
    time (load one per thread otherwise).

    Example::

        policy = load_policy("panda_push.pt")
        env = policy.make_env(randomization="default")
        obs, _ = env.reset(seed=0)
        obs, reward, terminated, truncated, info = env.step(policy.act(obs))
    """

    path: str
    metadata: dict
    module: Any  # the frozen TorchScript module (or an onnxruntime session for ONNX files)
    format: str = "torchscript"

    def __post_init__(self) -> None:
        md = self.metadata
        self.task: str = md["task"]
        self.env_id: str = md["env_id"]
        self.obs_dim: int = int(md["observation"]["dim"])
        self.act_dim: int = int(md["action"]["dim"])
        self.control_period: float = float(md["control_period_s"])
        # Limits cut to the robot's datasheet ones (older files carry a wider joint-6 limit;
        # see manip_rl.policy_metadata): no target past the datasheet is ever commanded.
        self.action_spec: policy_io.ActionSpec = narrowed_limits(
            policy_io.ActionSpec.from_json(md["action"]), robot_of(md, self.path)
        )
        # The file's own observation contract, not a task table: a file acts the same whatever
        # tasks this manip_rl knows.
        self.layout: policy_io.ObsLayout = policy_io.ObsLayout.from_json(
            self.task, md["observation"]["fields"]
        )
        self.weights_sha256: str = md["weights_sha256"]
        self._single_shape = (self.obs_dim,)
        self._in_dtype = np.dtype(np.float32)  # what the module is fed
        # Batch 1, the robot's case, runs on an input buffer owned here: writing the observation
        # into it casts to float32 and skips the checks and conversions of the general path
        # (~2 us of a ~25 us call). Not reentrant: act from one thread at a time.
        if self.format == "onnx":
            self._input_name = self.module.get_inputs()[0].name
            self._output_names = [self.module.get_outputs()[0].name]
            self._run = self._run_onnx
            # Buffers bound once: onnxruntime skips its per-call input conversion and output
            # allocation.
            self._in1 = np.zeros((1, self.obs_dim), dtype=np.float32)
            self._out1 = np.zeros((1, self.act_dim), dtype=np.float32)
            self._binding = self.module.io_binding()
            self._binding.bind_input(
                self._input_name, "cpu", 0, np.float32, [1, self.obs_dim], self._in1.ctypes.data
            )
            self._binding.bind_output(
                self._output_names[0],
                "cpu",
                0,
                np.float32,
                [1, self.act_dim],
                self._out1.ctypes.data,
            )
            self._out1_row = self._out1[0]
            self._act1 = self._act1_onnx
        else:
            # The ScriptMethod itself: skips nn.Module.__call__'s hook handling (~1.5 us).
            self._forward = self.module.forward
            self._run = self._run_torch
            if self.metadata["normalization"]["enabled"]:
                # The module normalizes in float64 (FlatPolicy): given float64, its first op
                # skips the mixed-dtype path (~1.3 us of ~25 us at batch 1). A float32
                # observation upcasts exactly, so the action is the same.
                self._in_dtype = np.dtype(np.float64)
            t_dtype = torch.float64 if self._in_dtype == np.float64 else torch.float32
            self._t_in1 = torch.zeros((1, self.obs_dim), dtype=t_dtype)
            self._in1 = self._t_in1.numpy()  # shares the tensor's memory
            self._act1 = self._act1_torch
        self._in1_row = self._in1[0]  # a view made once (~0.1 us a call)

    def act(self, obs: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        x = obs
        if type(x) is np.ndarray and x.shape == self._single_shape:
            self._in1_row[...] = x  # casts to the module's dtype
            return self._act1()
        if isinstance(x, Mapping):
            x = self._flatten(x)
            if x.shape == self._single_shape:
                self._in1_row[...] = x
                return self._act1()
        if type(x) is not np.ndarray or x.dtype != self._in_dtype or not x.flags.c_contiguous:
            x = np.array(x, dtype=self._in_dtype, order="C")  # a copy: contiguous and writeable
        elif not x.flags.writeable:  # torch.from_numpy wants a writeable array
            x = x.copy()
        shape = x.shape
        if shape == self._single_shape:
            return self._run(x.reshape(1, -1))[0]
        if len(shape) == 2 and shape[1] == self.obs_dim:
            return self._run(x)
        raise ValueError(
            f"observation has shape {shape}, but this {self.task} policy ({self.path}) takes "
            f"{self.obs_dim} values: shape ({self.obs_dim},) or (B, {self.obs_dim}); build it with "
            f"policy_io.flatten_observation (achieved_goal|desired_goal|observation)"
        )

    def _flatten(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The flat input of a dict observation (SB3's order), with its sizes checked so a dict
        from another task's env is refused rather than misread."""
        missing = [k for k in DICT_KEYS if k not in obs]
        if missing:
            raise ValueError(
                f"observation dict lacks {missing}; this {self.task} policy ({self.path}) takes "
                f"the env's dict ({', '.join(DICT_KEYS)}) or the flat vector"
            )
        sizes = {
            "achieved_goal": self.layout.goal_dim,
            "desired_goal": self.layout.goal_dim,
            "observation": self.layout.obs_dim,
        }
        for key, size in sizes.items():
            got = np.shape(obs[key])
            if not got or got[-1] != size:
                raise ValueError(
                    f"observation[{key!r}] has shape {got}, but this {self.task} policy "
                    f"({self.path}) takes {size} values there; is it the env of {self.env_id}?"
                )
        return policy_io.flatten_observation(obs)

    def make_env(self, randomization: Any = None, **overrides: Any) -> Any:
        """The Gymnasium env this file describes: its ``env_id`` (task, reward, episode
        length) in the file's action mode. ``randomization`` as the envs take it (None,
        ``"default"``, a YAML path, a dict); ``overrides`` go to ``gym.make`` (e.g.
        ``render_mode="rgb_array"``, ``max_episode_steps=200``). Needs Gymnasium and MuJoCo."""
        import gymnasium as gym

        import manip_rl  # noqa: F401  (registers the envs)

        if self.env_id not in gym.registry:
            raise ValueError(
                f"{self.path}: its env id {self.env_id!r} is not registered in this manip_rl "
                "(see `manip-rl envs`); install the manip_rl version that exported it"
            )
        kwargs = {"action_mode": self.action_spec.mode, "randomization": randomization}
        kwargs.update(overrides)
        env = gym.make(self.env_id, **kwargs)
        spec = env.unwrapped.action_spec
        if spec.dim != self.act_dim or env.unwrapped.layout.flat_dim != self.obs_dim:
            env.close()
            raise ValueError(
                f"{self.path}: {self.env_id} in {kwargs['action_mode']} mode takes "
                f"{spec.dim} actions and {env.unwrapped.layout.flat_dim} observation values; "
                f"the policy has {self.act_dim} and {self.obs_dim}"
            )
        return env

    def _act1_torch(self) -> np.ndarray:
        return self._forward(self._t_in1).numpy()[0]

    def _act1_onnx(self) -> np.ndarray:
        self.module.run_with_iobinding(self._binding)
        return self._out1_row.copy()  # the buffer is reused by the next call

    def _run_torch(self, x: np.ndarray) -> np.ndarray:
        return self._forward(torch.from_numpy(x)).numpy()

    def _run_onnx(self, x: np.ndarray) -> np.ndarray:
        return self.module.run(self._output_names, {self._input_name: x})[0]

    __call__ = act


def load_policy(path: str | os.PathLike, optimize: bool = True) -> LoadedPolicy:
    """Load a policy file written by :func:`export_policy` (TorchScript, or ONNX by its ``.onnx``
    name, which needs onnxruntime). Checks the metadata schema and the weights hash; raises
    :class:`PolicyFileError` naming the problem. ``optimize`` freezes the module and applies
    ``torch.jit.optimize_for_inference`` (the fast path for acting)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PolicyFileError(
            f"policy file {path!r} does not exist; export one with "
            f"`manip-rl export RUN --out {os.path.basename(path) or 'policy.pt'}`"
        )
    if _is_onnx_path(path):
        return _load_onnx(path)
    if not zipfile.is_zipfile(path):
        raise PolicyFileError(
            f"{path!r} is not a TorchScript file (not a zip archive); policy files are written by "
            f"`manip-rl export` (an SB3 model.zip is not a policy file: export it first; an ONNX "
            f"policy file must be named *.onnx)"
        )
    extra = {METADATA_FILE: ""}
    try:
        with _quiet_jit():
            module = torch.jit.load(path, map_location="cpu", _extra_files=extra)
    except Exception as e:  # torch raises RuntimeError with a C++ trace
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PolicyFileError(
            f"{path!r} is not a TorchScript file ({first}); policy files are written by "
            f"`manip-rl export`"
        ) from None
    md = _parse_metadata(extra[METADATA_FILE], path)
    actual = weights_sha256(module)
    if actual != md["weights_sha256"]:
        raise PolicyFileError(
            f"{path!r}: weights hash mismatch: the file's weights hash to {actual[:16]}..., its "
            f"metadata records {md['weights_sha256'][:16]}...; the weights or the metadata were "
            f"changed after export. Export the policy again."
        )
    _check_module_matches_metadata(module, md, path)
    module.eval()
    for param in module.parameters():  # acting never needs gradients
        param.requires_grad_(False)
    if optimize:
        with _quiet_jit():
            module = torch.jit.freeze(module)
            # A fused MLP is already in its fastest form; optimize_for_inference would undo
            # its in-place activations. Files from before the fused form have no such flag.
            if not getattr(module, "fused", False):
                module = torch.jit.optimize_for_inference(module)
    return LoadedPolicy(path=path, metadata=md, module=module)


def read_metadata(path: str | os.PathLike) -> dict:
    """The parsed ``manip_rl.json`` of a policy file, after every check :func:`load_policy`
    makes (the weights are loaded to check their hash, but not optimized)."""
    return load_policy(path, optimize=False).metadata


def _is_onnx_path(path: str) -> bool:
    return path.lower().endswith(".onnx")


def _parse_metadata(raw: bytes | str, path: str, fmt: str = "torchscript") -> dict:
    kind = "an ONNX model" if fmt == "onnx" else "a TorchScript file"
    if not raw:
        raise PolicyFileError(
            f"{path!r} has no {METADATA_FILE} metadata: it is {kind}, but not one "
            f"written by `manip-rl export`; export the policy with `manip-rl export RUN`"
        )
    try:
        md = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PolicyFileError(
            f"{path!r}: its {METADATA_FILE} metadata is not valid JSON ({e})"
        ) from None
    if not isinstance(md, dict):
        raise PolicyFileError(f"{path!r}: its {METADATA_FILE} metadata is not a JSON object")
    version = md.get("schema_version")
    if version != SCHEMA_VERSION:
        raise PolicyFileError(
            f"{path!r}: metadata schema version {version!r} is unknown; this manip_rl reads "
            f"version {SCHEMA_VERSION}. Export the policy again with this manip_rl version."
        )
    # Every safety-relevant field (limits, names, period, scales, normalization), by name.
    return validate_metadata(md, path, fmt)


def _check_module_matches_metadata(module: Any, md: dict, path: str) -> None:
    """The normalization statistics the module applies are the ones the metadata reports."""
    norm = md["normalization"]
    for name in ("normalize", "clip_obs", "obs_scale", "obs_shift"):
        if not hasattr(module, name):
            raise PolicyFileError(
                f"{path!r}: the TorchScript module lacks {name!r}, so it is not a manip_rl policy "
                f"module of schema {SCHEMA_VERSION}; export the policy again"
            )
    if bool(module.normalize) != bool(norm["enabled"]):
        raise PolicyFileError(
            f"{path!r}: metadata says normalization enabled={norm['enabled']}, the module "
            f"{'normalizes' if module.normalize else 'does not normalize'}; export it again"
        )
    if norm["enabled"]:
        scale, shift = expected_normalizer(norm)
        got_scale, got_shift = module.obs_scale.numpy(), module.obs_shift.numpy()
        if (
            got_scale.shape != scale.shape
            or not np.allclose(got_scale, scale, rtol=1e-12, atol=0)
            or not np.allclose(got_shift, shift, rtol=1e-12, atol=1e-300)
            or float(module.clip_obs) != float(norm["clip_obs"])
        ):
            raise PolicyFileError(
                f"{path!r}: the normalization statistics in the metadata differ from the ones "
                f"baked into the module; export it again"
            )


# --------------------------------------------------------------------------------- exporting
@dataclasses.dataclass
class PolicySource:
    """What an export reads: the SB3 model, its VecNormalize statistics and provenance."""

    model: Any
    vecnormalize: Any
    env_id: str
    action_mode: str = policy_io.JOINT_DELTA
    algorithm: str = ""
    timesteps: int = 0
    seed: int | None = None
    randomization: dict | None = None
    eval_success: dict | None = None
    source_run: str | None = None


def source_from_run(run_or_path: Any, which: str | None = None) -> PolicySource:
    """A :class:`PolicySource` from a run directory (path or ``rundir.Run``)."""
    from manip_rl.policies.rundir import load_run

    run = load_run(run_or_path) if isinstance(run_or_path, str | os.PathLike) else run_or_path
    which = which or run.default_which()
    model = run.load_model(which)
    try:
        timesteps = int(run.model_meta(which)["timesteps"])
    except (ValueError, KeyError):  # RunError is a ValueError: no meta.json for this model
        timesteps = int(getattr(model, "num_timesteps", 0))
    cfg = run.config
    env_kwargs = cfg.get("env_kwargs") or {}
    return PolicySource(
        model=model,
        vecnormalize=run.load_vecnormalize(which),
        env_id=run.env_id,
        action_mode=cfg.get("action_mode") or env_kwargs.get("action_mode") or "joint_delta",
        algorithm=run.algo,
        timesteps=timesteps,
        seed=run.seed,
        randomization=run.randomization,
        eval_success=run.eval_success,
        source_run=os.path.abspath(run.path) + f" ({which})",
    )


def task_of(env_id: str) -> str:
    """The task key (``"push"``...) of a manip_rl env id, from the task registry."""
    from manip_rl.envs import registry

    try:
        return registry.get(env_id).key
    except registry.UnknownTaskError as e:
        raise ExportError(f"env id {env_id!r} is not a manip_rl task: {e}") from None


def _dict_keys_and_sizes(space: Any) -> list[tuple[str, int]] | None:
    """[(key, size)] of a Dict observation space in the order SB3 concatenates it; None for Box."""
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        if len(space.shape) != 1:
            raise ExportError(f"observation space {space} is not a flat vector")
        return None
    if isinstance(space, spaces.Dict):
        keys = tuple(space.spaces)
        if keys != DICT_KEYS:
            raise ExportError(
                f"Dict observation keys {keys} differ from the GoalEnv keys {DICT_KEYS} "
                f"(SB3's CombinedExtractor concatenates them in this order)"
            )
        out = []
        for k, sub in space.spaces.items():
            if not isinstance(sub, spaces.Box) or len(sub.shape) != 1:
                raise ExportError(f"observation[{k!r}] is {sub}; only flat Box entries export")
            out.append((k, int(sub.shape[0])))
        return out
    raise ExportError(f"observation space {type(space).__name__} cannot be exported")


def _actor_of(policy: Any) -> tuple[nn.Module, bool]:
    """(a copy of policy_net + action_net, squash) of an SB3 ActorCriticPolicy."""
    import copy

    from stable_baselines3.common.distributions import (
        DiagGaussianDistribution,
        StateDependentNoiseDistribution,
    )
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor

    if not isinstance(policy, ActorCriticPolicy):
        raise ExportError(
            f"policy class {type(policy).__name__} is not an SB3 ActorCriticPolicy; manip_rl "
            f"exports the on-policy algorithms (ppo, a2c, trpo, reinforce, ppo_kl)"
        )
    extractor = policy.pi_features_extractor
    if isinstance(extractor, CombinedExtractor):
        for key, sub in extractor.extractors.items():
            if not isinstance(sub, nn.Flatten):
                raise ExportError(f"features extractor for {key!r} is {sub}, not a Flatten")
    elif not isinstance(extractor, FlattenExtractor):
        raise ExportError(
            f"features extractor {type(extractor).__name__} is not supported (only SB3's "
            f"FlattenExtractor / CombinedExtractor of flat vectors)"
        )
    if not isinstance(
        policy.action_dist, DiagGaussianDistribution | StateDependentNoiseDistribution
    ):
        raise ExportError(
            f"action distribution {type(policy.action_dist).__name__} is not a Gaussian; only "
            f"continuous (Box) actions export"
        )
    squash = bool(policy.squash_output)
    actor = nn.Sequential(
        copy.deepcopy(policy.mlp_extractor.policy_net), copy.deepcopy(policy.action_net)
    )
    actor = actor.to("cpu", torch.float32).eval()
    for p in actor.parameters():
        p.requires_grad_(False)
    return actor, squash


def _normalization(vecnorm: Any, keys_sizes: list[tuple[str, int]] | None, obs_dim: int):
    """(mean, var, std, normalized mask) in flat order, or Nones when normalization is off."""
    if vecnorm is None or not getattr(vecnorm, "norm_obs", False):
        return None, None, None, None
    eps = float(vecnorm.epsilon)
    rms = vecnorm.obs_rms
    if keys_sizes is None:
        if isinstance(rms, Mapping):
            raise ExportError("VecNormalize has per-key statistics, but the policy takes a vector")
        mean = np.asarray(rms.mean, dtype=np.float64).reshape(-1)
        var = np.asarray(rms.var, dtype=np.float64).reshape(-1)
        mask = np.ones(obs_dim, dtype=bool)
    else:
        if not isinstance(rms, Mapping):
            raise ExportError("VecNormalize has flat statistics, but the policy takes a Dict")
        norm_keys = set(vecnorm.norm_obs_keys or [])
        means, vars_, masks = [], [], []
        for key, size in keys_sizes:
            if key in norm_keys:
                means.append(np.asarray(rms[key].mean, dtype=np.float64).reshape(-1))
                vars_.append(np.asarray(rms[key].var, dtype=np.float64).reshape(-1))
                masks.append(np.ones(size, dtype=bool))
            else:  # passed through unchanged by VecNormalize
                means.append(np.zeros(size))
                vars_.append(np.full(size, 1.0 - eps))
                masks.append(np.zeros(size, dtype=bool))
        mean, var, mask = np.concatenate(means), np.concatenate(vars_), np.concatenate(masks)
    if mean.shape != (obs_dim,) or var.shape != (obs_dim,):
        raise ExportError(
            f"VecNormalize statistics have {mean.size} values, the policy takes {obs_dim}"
        )
    return mean, var, np.sqrt(var + eps), mask


def _package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = _importlib_metadata.version(name)
        except _importlib_metadata.PackageNotFoundError:
            continue
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x


@dataclasses.dataclass
class Exported:
    """An in-memory export: the (unfrozen) module and its metadata, before writing."""

    module: FlatPolicy
    metadata: dict
    source: PolicySource
    dict_keys: list[tuple[str, int]] | None


def build_export(source: PolicySource) -> Exported:
    """Build the module and its metadata from a :class:`PolicySource`."""
    from gymnasium import spaces

    model = source.model
    policy = model.policy
    task = task_of(source.env_id)
    act_space = policy.action_space
    if not isinstance(act_space, spaces.Box) or len(act_space.shape) != 1:
        raise ExportError(f"action space {act_space} is not a flat Box")
    if not (np.all(act_space.low == -1.0) and np.all(act_space.high == 1.0)):
        raise ExportError(f"action space bounds are not [-1, 1] ({act_space})")
    act_dim = int(act_space.shape[0])
    from manip_rl.envs import registry

    task_spec = registry.get(task)
    action_spec = task_spec.action_spec(source.action_mode)
    if action_spec.dim != act_dim:
        raise ExportError(
            f"the model acts with {act_dim} values, the {task} task in {source.action_mode} mode "
            f"takes {action_spec.dim}; is the action mode right?"
        )
    layout = task_spec.layout(act_dim)
    keys_sizes = _dict_keys_and_sizes(policy.observation_space)
    obs_dim = (
        sum(s for _, s in keys_sizes) if keys_sizes else int(policy.observation_space.shape[0])
    )
    if obs_dim != layout.flat_dim:
        raise ExportError(
            f"the model takes {obs_dim} observation values, the {task} layout has "
            f"{layout.flat_dim}; was it trained on {source.env_id}?"
        )
    if keys_sizes:
        expected = [
            ("achieved_goal", layout.goal_dim),
            ("desired_goal", layout.goal_dim),
            ("observation", layout.obs_dim),
        ]
        if keys_sizes != expected:
            raise ExportError(f"Dict observation sizes {keys_sizes} differ from {expected}")
    actor, squash = _actor_of(policy)
    mean, var, std, mask = _normalization(source.vecnormalize, keys_sizes, obs_dim)
    clip = float(source.vecnormalize.clip_obs) if mean is not None else 10.0
    module = FlatPolicy(actor, obs_dim, act_dim, squash, mean, std, clip, mask).eval()
    from manip_rl.envs.scene import CONTROL_PERIOD

    normalization: dict[str, Any] = {
        "enabled": mean is not None,
        "mean": None if mean is None else mean.tolist(),
        "var": None if var is None else var.tolist(),
        "clip_obs": None if mean is None else float(source.vecnormalize.clip_obs),
        "epsilon": None if mean is None else float(source.vecnormalize.epsilon),
    }
    if mean is not None:
        # Which flat entries VecNormalize normalizes (all, unless norm_obs_keys left some out).
        normalization["normalized"] = mask.tolist()
    metadata = {
        "schema_version": SCHEMA_VERSION,
        "task": task,
        "env_id": source.env_id,
        "observation": {"dim": obs_dim, "fields": layout.flat_fields()},
        "action": action_spec.to_json(),
        "control_period_s": float(CONTROL_PERIOD),
        "normalization": normalization,
        "provenance": {
            "algorithm": source.algorithm or type(model).__name__.lower(),
            "timesteps": int(source.timesteps),
            "seed": source.seed,
            "randomization": _jsonable(source.randomization),
            "eval_success": _jsonable(source.eval_success),
            "packages": _package_versions(),
            "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "source_run": source.source_run,
            "sb3_policy": type(policy).__name__,
            "observation_input": "dict" if keys_sizes else "flat",
            "squash_output": squash,
        },
        "weights_sha256": weights_sha256(module),
    }
    return Exported(module=module, metadata=metadata, source=source, dict_keys=keys_sizes)


def export_policy(
    run_or_model: Any,
    out_path: str | os.PathLike,
    fmt: str = "torchscript",
    which: str | None = None,
    vecnormalize: Any = None,
    env_id: str | None = None,
    action_mode: str = policy_io.JOINT_DELTA,
    provenance: Mapping[str, Any] | None = None,
) -> Exported:
    """Write the policy file ``out_path`` and return what was written.

    ``run_or_model``: a run directory (path or ``rundir.Run``; ``which`` picks best/final/latest),
    a :class:`PolicySource`, or an SB3 model (then pass ``env_id``, and ``vecnormalize`` when it
    trained with one; ``provenance`` may give algorithm, timesteps, seed, randomization,
    eval_success, source_run). ``fmt``: ``torchscript`` (default) or ``onnx``.
    """
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} is unknown; use one of {FORMATS}")
    if isinstance(run_or_model, PolicySource):
        source = run_or_model
    elif hasattr(run_or_model, "policy") and hasattr(run_or_model, "predict"):
        if env_id is None:
            raise ExportError("exporting a bare SB3 model needs env_id=")
        prov = dict(provenance or {})
        source = PolicySource(
            model=run_or_model,
            vecnormalize=vecnormalize,
            env_id=env_id,
            action_mode=action_mode,
            algorithm=prov.get("algorithm", type(run_or_model).__name__.lower()),
            timesteps=int(prov.get("timesteps", getattr(run_or_model, "num_timesteps", 0))),
            seed=prov.get("seed", getattr(run_or_model, "seed", None)),
            randomization=prov.get("randomization"),
            eval_success=prov.get("eval_success"),
            source_run=prov.get("source_run"),
        )
    else:
        source = source_from_run(run_or_model, which)
    exported = build_export(source)
    if fmt == "torchscript":
        _write_torchscript(exported, os.fspath(out_path))
    else:
        _write_onnx(exported, os.fspath(out_path))
    return exported


def convert_policy_file(
    src: str | os.PathLike, out_path: str | os.PathLike, samples: int = 10_000, seed: int = 0
) -> dict:
    """Write the TorchScript policy file ``src`` as ONNX (same weights, same metadata, plus
    ``provenance.converted_from``), for robots that run ONNX Runtime (measured 2x faster per
    call than TorchScript here, cold or warm): no run directory or SB3 needed. Checks parity
    between the two files on ``samples`` observations (the env's, Gaussian ones around the
    normalization statistics at 1x to 100x their spread, extreme values) and returns
    ``{"max_abs_diff", "n", "tolerance", "ok"}``; raises :class:`ExportError` when it fails."""
    src = os.fspath(src)
    if _is_onnx_path(src):
        raise ExportError(f"{src!r} is ONNX already; convert a TorchScript (.pt) policy file")
    out_path = os.fspath(out_path)
    if not _is_onnx_path(out_path):
        raise ExportError(f"--out {out_path!r}: an ONNX policy file must end in .onnx")
    policy = load_policy(src, optimize=False)  # every check of the file; the module as saved
    metadata = copy.deepcopy(policy.metadata)
    metadata.setdefault("provenance", {})["converted_from"] = {
        "file": os.path.basename(src),
        "weights_sha256": policy.weights_sha256,
    }
    _write_onnx(Exported(policy.module, metadata, None, None), out_path)  # type: ignore[arg-type]
    converted = load_policy(out_path)

    norm = metadata["normalization"]
    real = collect_observations(policy.env_id, min(1000, samples), seed, policy.action_spec.mode)
    if norm.get("enabled"):
        mean = np.asarray(norm["mean"], dtype=np.float64)
        std = np.sqrt(np.asarray(norm["var"], dtype=np.float64))
    else:
        mean, std = real.mean(0), real.std(0)
    obs = _test_observations(real, mean, std, samples, np.random.default_rng(seed))
    diff = float(np.abs(converted.act(obs) - policy.act(obs)).max())
    report = {"max_abs_diff": diff, "n": len(obs), "tolerance": PARITY_TOLERANCE}
    report["ok"] = diff <= PARITY_TOLERANCE
    if not report["ok"]:
        raise ExportError(
            f"{out_path!r} differs from {src!r} by up to {diff:.2e} over {len(obs)} "
            f"observations (tolerance {PARITY_TOLERANCE:g}); keep the TorchScript file"
        )
    return report


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
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out_path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
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


def _onnx_weights_sha256(model: Any) -> str:
    """SHA-256 of the ONNX graph's initializers, sorted by name (name NUL raw bytes)."""
    from onnx import numpy_helper

    h = hashlib.sha256()
    for init in sorted(model.graph.initializer, key=lambda t: t.name):
        arr = numpy_helper.to_array(init)
        arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        h.update(f"{init.name}\0{arr.dtype.str}\0{list(arr.shape)}\0".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _write_onnx(exported: Exported, out_path: str) -> None:
    import io

    import onnx

    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated
        torch.onnx.export(
            exported.module,
            (torch.zeros(1, exported.module.obs_dim),),
            buf,
            dynamo=False,
            input_names=["obs"],
            output_names=["action"],
            dynamic_axes={"obs": {0: "batch"}, "action": {0: "batch"}},
            opset_version=17,
        )
    model = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(model)
    del model.metadata_props[:]
    for key, value in (
        (METADATA_FILE, json.dumps(exported.metadata, indent=1)),
        (ONNX_WEIGHTS_KEY, _onnx_weights_sha256(model)),
    ):
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value
    model.producer_name = "manip_rl"
    with _atomic_export(out_path) as tmp:
        onnx.save(model, tmp)


def _load_onnx(path: str) -> LoadedPolicy:
    try:
        import onnx
        import onnxruntime as ort
    except ImportError as e:
        raise PolicyFileError(
            f"{path!r} is an ONNX policy; loading it needs onnx and onnxruntime "
            f"(`pip install -e .[onnx]`): {e}"
        ) from None
    try:
        model = onnx.load(path)
    except Exception as e:
        raise PolicyFileError(f"{path!r} is not an ONNX file ({e})") from None
    props = {p.key: p.value for p in model.metadata_props}
    md = _parse_metadata(props.get(METADATA_FILE, ""), path, fmt="onnx")
    recorded = props.get(ONNX_WEIGHTS_KEY)
    actual = _onnx_weights_sha256(model)
    if recorded != actual:
        raise PolicyFileError(
            f"{path!r}: weights hash mismatch: the ONNX initializers hash to {actual[:16]}..., "
            f"its metadata records {str(recorded)[:16]}...; export the policy again"
        )
    check_onnx_matches_metadata(model, md, path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    return LoadedPolicy(path=path, metadata=md, module=session, format="onnx")


# --------------------------------------------------------------------------------- verifying
def sb3_actions(source: PolicySource, flat_obs: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """The SB3 deterministic actions for flat observations: VecNormalize's ``normalize_obs`` and
    then ``model.predict(deterministic=True)``, exactly as training's evaluation acts."""
    keys_sizes = _dict_keys_and_sizes(source.model.policy.observation_space)
    out = []
    for i in range(0, len(flat_obs), chunk):
        batch = np.asarray(flat_obs[i : i + chunk], dtype=np.float32)
        obs: Any = batch
        if keys_sizes:
            obs, start = {}, 0
            for key, size in keys_sizes:
                obs[key] = batch[:, start : start + size]
                start += size
        if source.vecnormalize is not None:
            obs = source.vecnormalize.normalize_obs(obs)
        action, _ = source.model.predict(obs, deterministic=True)
        out.append(np.asarray(action, dtype=np.float32).reshape(len(batch), -1))
    return np.concatenate(out)


def collect_observations(
    env_id: str,
    n: int,
    seed: int = 0,
    action_mode: str = policy_io.JOINT_DELTA,
    randomization: Any = "default",
) -> np.ndarray:
    """``n`` flat observations from the randomized env under uniformly random actions."""
    import gymnasium as gym

    env = gym.make(env_id, randomization=randomization, action_mode=action_mode)
    env.action_space.seed(seed)
    out = []
    obs, _ = env.reset(seed=seed)
    episode = 0
    while len(out) < n:
        out.append(policy_io.flatten_observation(obs))
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    env.close()
    return np.stack(out)


def parity_observations(
    source: PolicySource, n: int = 10_000, seed: int = 0, n_env: int = 1_000
) -> np.ndarray:
    """At least ``n`` test observations: real ones from the randomized env, Gaussian ones around
    the training statistics at 1x, 10x and 100x their spread, and extreme ones (entries up to
    +-1e6, one-hot spikes, zeros), so that normalization clipping and action clipping both act."""
    rng = np.random.default_rng(seed)
    real = collect_observations(
        source.env_id, n_env, seed, source.action_mode, source.randomization or "default"
    )
    vn = source.vecnormalize
    if vn is not None and getattr(vn, "norm_obs", False):
        keys = _dict_keys_and_sizes(source.model.policy.observation_space)
        rms = vn.obs_rms
        if keys:
            mean = np.concatenate(
                [np.ravel(rms[k].mean) if k in rms else np.zeros(s) for k, s in keys]
            )
            std = np.concatenate(
                [np.sqrt(np.ravel(rms[k].var)) if k in rms else np.ones(s) for k, s in keys]
            )
        else:
            mean, std = np.ravel(rms.mean), np.sqrt(np.ravel(rms.var))
    else:
        mean, std = real.mean(0), real.std(0)
    return _test_observations(real, mean, std, n, rng)


def _test_observations(
    real: np.ndarray, mean: np.ndarray, std: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``real`` observations plus Gaussian ones around ``mean`` at 1x, 10x and 100x ``std`` and
    extreme ones, at least ``n`` in all, as float32 (see :func:`parity_observations`)."""
    dim = real.shape[1]
    std = np.maximum(std, 1e-3)
    parts = [real]
    n_gauss = max(0, n - len(real) - 3 * dim - 4 - 2000)
    for i, scale in enumerate((1.0, 10.0, 100.0)):
        k = n_gauss // 3 + (n_gauss % 3 if i == 0 else 0)
        parts.append(mean + scale * std * rng.standard_normal((k, dim)))
    extremes = np.array([-1e6, -1e3, -10.0, -1.0, 0.0, 1.0, 10.0, 1e3, 1e6])
    parts.append(rng.choice(extremes, size=(2000, dim)))
    spikes = []
    for value in (1e6, -1e6, 1e3):
        block = np.tile(mean, (dim, 1))
        block[np.arange(dim), np.arange(dim)] = value
        spikes.append(block)
    parts += spikes
    parts.append(np.stack([np.zeros(dim), np.full(dim, 1e6), np.full(dim, -1e6), mean]))
    return np.concatenate(parts).astype(np.float32)


def check_parity(
    policy: LoadedPolicy, source: PolicySource, n: int = 10_000, seed: int = 0
) -> dict:
    """Max |file - SB3| over at least ``n`` observations (see :func:`parity_observations`)."""
    obs = parity_observations(source, n, seed)
    expected = sb3_actions(source, obs)
    got = policy.act(obs)
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    both_nan = np.isnan(got) & np.isnan(expected)
    diff[both_nan] = 0.0
    max_diff = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff)))
    return {
        "n": int(len(obs)),
        "max_abs_diff": max_diff,
        "tolerance": PARITY_TOLERANCE,
        "in_range": bool(np.all((got >= -1.0) & (got <= 1.0))),
        "ok": bool(max_diff <= PARITY_TOLERANCE and np.all(np.abs(got) <= 1.0)),
    }


def check_closed_loop(
    policy: LoadedPolicy, source: PolicySource, episodes: int = 50, seed: int = 10_000
) -> dict:
    """Success of the file and of the SB3 policy in the randomized env, on the same episode seeds.

    Randomization: the run's own configuration, else the task's default ranges. The file passes
    when its success rate lies inside the SB3 policy's 95% Wilson interval (and vice versa).
    """
    import gymnasium as gym

    randomization = source.randomization or "default"
    env = gym.make(source.env_id, randomization=randomization, action_mode=source.action_mode)
    dict_input = _dict_keys_and_sizes(source.model.policy.observation_space) is not None

    def sb3_act(obs: dict) -> np.ndarray:
        x: Any = obs if dict_input else policy_io.flatten_observation(obs)
        if source.vecnormalize is not None:
            x = source.vecnormalize.normalize_obs(x)
        return source.model.predict(x, deterministic=True)[0]

    def file_act(obs: dict) -> np.ndarray:
        return policy.act(policy_io.flatten_observation(obs))

    results = {}
    for name, act in (("sb3", sb3_act), ("file", file_act)):
        wins = 0
        for ep in range(episodes):
            obs, _ = env.reset(seed=seed + ep)
            done, info = False, {}
            while not done:
                obs, _, terminated, truncated, info = env.step(act(obs))
                done = terminated or truncated
            wins += int(bool(info.get("is_success", False)))
        lo, hi = wilson_interval(wins, episodes)
        results[name] = {
            "successes": wins,
            "episodes": episodes,
            "rate": wins / episodes,
            "ci95": [float(lo), float(hi)],
        }
    env.close()
    sb3, f = results["sb3"], results["file"]
    ok = (
        sb3["ci95"][0] <= f["rate"] <= sb3["ci95"][1]
        and f["ci95"][0] <= sb3["rate"] <= f["ci95"][1]
    )
    randomization_name = "run" if source.randomization else "default"
    return {**results, "randomization": randomization_name, "ok": bool(ok)}


# Run in a fresh interpreter by check_isolated: block SB3, Gymnasium and MuJoCo, then load & act.
_ISOLATED_SCRIPT = r"""
import importlib.abc, json, sys
BLOCKED = ("stable_baselines3", "sb3_contrib", "gymnasium", "gymnasium_robotics", "mujoco")

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked in this test", name=name)
        return None

sys.meta_path.insert(0, Block())
try:
    import gymnasium  # noqa: F401
    blocker_active = False
except ImportError:
    blocker_active = True
import numpy as np
from manip_rl.export import load_policy
policy = load_policy(sys.argv[1])
obs = np.zeros(policy.obs_dim, dtype=np.float32)
a1 = policy.act(obs)
ab = policy.act(np.zeros((4, policy.obs_dim), dtype=np.float32))
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps({"action": a1.tolist(), "batch_shape": list(ab.shape), "leaked": leaked,
                  "blocker_active": blocker_active,
                  "task": policy.task, "obs_dim": policy.obs_dim}))
"""


def check_isolated(path: str | os.PathLike, timeout: float = 120.0) -> dict:
    """Load and act with the file in a subprocess where stable_baselines3, sb3_contrib,
    gymnasium and mujoco cannot be imported."""
    proc = subprocess.run(
        [sys.executable, "-c", _ISOLATED_SCRIPT, os.fspath(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        return {"ok": False, "error": proc.stderr.strip().splitlines()[-1:] or ["exit code"]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["ok"] = (
        out["blocker_active"]
        and not out["leaked"]
        and out["batch_shape"] == [4, len(out["action"])]
        and bool(np.all(np.abs(out["action"]) <= 1.0))
    )
    return out


def verify(
    path: str | os.PathLike, source: PolicySource, episodes: int = 50, samples: int = 10_000
) -> dict:
    """The three checks of a written policy file: parity, closed loop, isolation."""
    policy = load_policy(path)
    report = {
        "parity": check_parity(policy, source, samples),
        "closed_loop": check_closed_loop(policy, source, episodes) if episodes > 0 else None,
        "isolated": check_isolated(path),
    }
    report["ok"] = all(v["ok"] for v in report.values() if v is not None)
    return report


# --------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run",
        help="run directory written by `manip-rl train`; or a TorchScript policy file (.pt) to "
        "convert with --format onnx (same metadata, parity checked)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="policy file to write (default: RUN/policy.pt, or RUN/policy.onnx)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="torchscript",
        help="torchscript (the robot-side format, loads with torch + numpy) or onnx",
    )
    p.add_argument(
        "--which",
        choices=("best", "final", "latest"),
        default=None,
        help="which saved model (default: best, else final, else latest)",
    )
    p.add_argument(
        "--verify",
        action="store_true",
        help="check parity with SB3, closed-loop success and SB3-free loading",
    )
    p.add_argument("--episodes", type=int, default=50, help="closed-loop episodes per policy")
    p.add_argument("--samples", type=int, default=10_000, help="parity observations")


def _convert_command(args: argparse.Namespace) -> int:
    if args.format != "onnx":
        print(
            f"manip-rl export: {args.run!r} is a policy file; a file converts to ONNX only: add "
            "--format onnx (or give a run directory)",
            file=sys.stderr,
        )
        return 2
    out = args.out or os.path.splitext(args.run)[0] + ".onnx"
    try:
        report = convert_policy_file(args.run, out, samples=args.samples)
    except (PolicyFileError, ExportError) as e:
        print(f"manip-rl export: {e}", file=sys.stderr)
        return 2
    print(
        f"wrote {out} (onnx) from {args.run}: parity PASS, max |onnx - torchscript| = "
        f"{report['max_abs_diff']:.2e} over {report['n']} observations (tolerance "
        f"{report['tolerance']:g})"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from manip_rl.policies.rundir import RunError

    if args.episodes < 0 or args.samples < 1:
        print("manip-rl export: --episodes must be >= 0 and --samples >= 1", file=sys.stderr)
        return 2

    if os.path.isfile(args.run):
        return _convert_command(args)
    out = args.out or os.path.join(
        args.run, "policy.onnx" if args.format == "onnx" else "policy.pt"
    )
    try:
        source = source_from_run(args.run, args.which)
        exported = export_policy(source, out, fmt=args.format)
    except (RunError, ExportError) as e:
        print(f"manip-rl export: {e}", file=sys.stderr)
        return 2
    md = exported.metadata
    print(
        f"wrote {out} ({args.format}): {md['task']} {md['env_id']}, obs {md['observation']['dim']}"
        f" -> act {md['action']['dim']}, normalization "
        f"{'on' if md['normalization']['enabled'] else 'off'}, {md['provenance']['algorithm']} "
        f"@ {md['provenance']['timesteps']} steps, sha256 {md['weights_sha256'][:16]}..."
    )
    if not args.verify:
        return 0
    report = verify(out, source, args.episodes, args.samples)
    par, cl, iso = report["parity"], report["closed_loop"], report["isolated"]
    print(
        f"parity     {'PASS' if par['ok'] else 'FAIL'}  max |file - SB3| = "
        f"{par['max_abs_diff']:.2e} over {par['n']} observations (tolerance {par['tolerance']:g})"
    )
    if cl is not None:
        s, f = cl["sb3"], cl["file"]
        print(
            f"closed loop {'PASS' if cl['ok'] else 'FAIL'}  success SB3 {s['successes']}/"
            f"{s['episodes']} (95% CI {s['ci95'][0]:.0%}-{s['ci95'][1]:.0%}), file "
            f"{f['successes']}/{f['episodes']} (95% CI {f['ci95'][0]:.0%}-{f['ci95'][1]:.0%}), "
            f"randomization: {cl['randomization']}"
        )
    print(
        f"isolated   {'PASS' if iso['ok'] else 'FAIL'}  loads and acts without "
        f"stable_baselines3, gymnasium, mujoco" + ("" if iso["ok"] else f": {iso.get('error')}")
    )
    return 0 if report["ok"] else 1
