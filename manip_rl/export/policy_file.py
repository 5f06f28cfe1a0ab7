"""The policy file format and its loader: all that the robot side imports of ``manip_rl.export``.

The file (``policy.pt``) is a TorchScript module::

    forward(obs: float32[B, obs_dim]) -> float32[B, act_dim]

taking the flat observation ``policy_io.flatten_observation(obs)`` (achieved_goal | desired_goal |
observation) and returning the deterministic action in [-1, 1], with the VecNormalize observation
normalization and clipping baked in. The TorchScript extra file ``manip_rl.json`` holds the
metadata (schema version 1, see :func:`manip_rl.export.build.build_export` and
``docs/export.md``), including ``weights_sha256`` (:func:`weights_sha256`), which
:func:`load_policy` checks. An ONNX file (``*.onnx``) carries the same metadata in its
``metadata_props``.

Loading (:func:`load_policy`) needs torch and numpy only (onnx and onnxruntime for ONNX files):
this module never imports stable-baselines3, Gymnasium or MuJoCo (``LoadedPolicy.make_env``
imports Gymnasium when called).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any, Final

import numpy as np
import torch
from torch import nn

from manip_rl import policy_io
from manip_rl.export.metadata import (
    PolicyFileError,
    check_onnx_matches_metadata,
    expected_normalizer,
    narrowed_limits,
    robot_of,
    validate_metadata,
)

SCHEMA_VERSION: Final = 2  # 2 adds "memory" (stateful files); memoryless files are written as 1
READ_SCHEMA_VERSIONS: Final = (1, 2)
METADATA_FILE: Final = "manip_rl.json"  # TorchScript extra file / ONNX metadata_props key
ONNX_WEIGHTS_KEY: Final = "manip_rl.onnx_weights_sha256"  # hash of the ONNX initializers
FORMATS: Final = ("torchscript", "onnx")
# The flat policy input is the Dict observation's keys in this order (SB3's sorted order).
DICT_KEYS: Final = ("achieved_goal", "desired_goal", "observation")


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """torch 2.9+ warns on every torch.jit call that it is deprecated; TorchScript is still the
    format a robot loads without Python model code, so keep users' logs clean."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r".*torch\.jit.*deprecated", DeprecationWarning)
        yield


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
        # see manip_rl.export.metadata): no target past the datasheet is ever commanded.
        self.action_spec: policy_io.ActionSpec = narrowed_limits(
            policy_io.ActionSpec.from_json(md["action"]), robot_of(md, self.path)
        )
        # The file's own observation contract, not a task table: a file acts the same whatever
        # tasks this manip_rl knows.
        self.layout: policy_io.ObsLayout = policy_io.ObsLayout.from_json(
            self.task, md["observation"]["fields"]
        )
        self.weights_sha256: str = md["weights_sha256"]
        # gym.make keywords of the env it was trained for beyond its id (e.g. max_episode_steps,
        # trajectory_robot); files without them were trained on the registered env.
        self.env_kwargs: dict[str, Any] = dict(md.get("env_kwargs") or {})
        memory = md.get("memory")
        # (name, shape without the batch) of each state the module carries, in its input order.
        self.state_spec: list[tuple[str, tuple[int, ...]]] = [
            (st["name"], tuple(int(n) for n in st["shape"]))
            for st in (memory or {}).get("state", [])
        ]
        self.stateful: bool = bool(self.state_spec)
        self._state: list[np.ndarray] | None = None  # None: zeros at the next act (reset)
        self._single_shape = (self.obs_dim,)
        self._in_dtype = np.dtype(np.float32)  # what the module is fed
        # Batch 1, the robot's case, runs on an input buffer owned here: writing the observation
        # into it casts to float32 and skips the checks and conversions of the general path
        # (~2 us of a ~25 us call). Not reentrant: act from one thread at a time.
        if self.stateful:
            self._forward = self.module.forward if self.format == "torchscript" else None
            self._in1 = np.zeros((1, self.obs_dim), dtype=np.float32)
        elif self.format == "onnx":
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

    def reset(self) -> None:
        """Start an episode: the state (LSTM or observation history) is zeros again, as it was
        in training at an episode's first step. A memoryless policy has nothing to reset."""
        self._state = None

    @property
    def state(self) -> dict[str, np.ndarray] | None:
        """A copy of the state, by name, each (B, *shape); None before the first act after a
        reset (and always for a memoryless policy)."""
        if self._state is None:
            return None
        return {name: s.copy() for (name, _), s in zip(self.state_spec, self._state, strict=True)}

    def peek(self, obs: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """The action for ``obs`` without moving the state on (a warm-up call; a memoryless
        policy just acts)."""
        if not self.stateful:
            return self.act(obs)
        return self._act_stateful(obs, keep=False)

    def act(self, obs: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """The action for ``obs``; a stateful policy carries its state on to the next call
        (call :meth:`reset` at each episode's start)."""
        if self.stateful:
            return self._act_stateful(obs, keep=True)
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

    def _act_stateful(self, obs: np.ndarray | Mapping[str, np.ndarray], keep: bool) -> np.ndarray:
        x = self._flatten(obs) if isinstance(obs, Mapping) else obs
        x = np.array(x, dtype=np.float32, order="C")  # a copy the module may hold on to
        single = x.shape == self._single_shape
        if single:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self.obs_dim:
            raise ValueError(
                f"observation has shape {np.shape(obs)}, but this {self.task} policy "
                f"({self.path}) takes {self.obs_dim} values: shape ({self.obs_dim},) or "
                f"(B, {self.obs_dim})"
            )
        batch = x.shape[0]
        state = self._state
        if state is None:
            state = [np.zeros((batch, *shape), dtype=np.float32) for _, shape in self.state_spec]
        elif state[0].shape[0] != batch:
            raise ValueError(
                f"{self.path}: the policy's state is for a batch of {state[0].shape[0]}, this "
                f"observation is a batch of {batch}; call reset() before acting on another batch"
            )
        if self.format == "onnx":
            feeds = {"obs": x, **{n: s for (n, _), s in zip(self.state_spec, state, strict=True)}}
            out = self.module.run(None, feeds)
        else:
            res = self._forward(torch.from_numpy(x), *(torch.from_numpy(s) for s in state))
            out = [t.numpy() for t in res]
        if keep:
            self._state = [np.ascontiguousarray(o, dtype=np.float32) for o in out[1:]]
        return out[0][0] if single else out[0]

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
        length) in the file's action mode, with the run's ``env_kwargs`` (``self.env_kwargs``:
        e.g. a longer episode, the FR3 trajectory path). ``randomization`` as the envs take it
        (None, ``"default"``, a YAML path, a dict); ``overrides`` go to ``gym.make`` over those
        (e.g. ``render_mode="rgb_array"``, ``max_episode_steps=200``). Needs Gymnasium and
        MuJoCo."""
        import gymnasium as gym

        import manip_rl  # noqa: F401  (registers the envs)

        if self.env_id not in gym.registry:
            raise ValueError(
                f"{self.path}: its env id {self.env_id!r} is not registered in this manip_rl "
                "(see `manip-rl envs`); install the manip_rl version that exported it"
            )
        kwargs = {"action_mode": self.action_spec.mode, "randomization": randomization}
        kwargs.update(self.env_kwargs)
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
            # A stateful module is frozen only (its LSTM is one fused op already).
            if not getattr(module, "fused", False) and md.get("memory") is None:
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
    if isinstance(version, bool) or version not in READ_SCHEMA_VERSIONS:
        raise PolicyFileError(
            f"{path!r}: metadata schema version {version!r} is unknown; this manip_rl reads "
            f"versions {', '.join(map(str, READ_SCHEMA_VERSIONS))}. Export the policy again with "
            "this manip_rl version."
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
    memory = md.get("memory")
    kind = (
        "lstm" if hasattr(module, "lstm") else "history" if hasattr(module, "history_dim") else None
    )
    if kind != (memory["kind"] if memory else None):
        raise PolicyFileError(
            f"{path!r}: metadata memory is {memory['kind'] if memory else 'none'}, the module's "
            f"is {kind or 'none'}; export the policy again"
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
    inputs = [
        i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}
    ]
    outputs = [o.name for o in model.graph.output]
    names = [st["name"] for st in (md.get("memory") or {}).get("state", [])]
    if inputs != ["obs", *names] or outputs != ["action", *(f"{n}_out" for n in names)]:
        raise PolicyFileError(
            f"{path!r}: the ONNX graph takes {inputs} and returns {outputs}; its metadata's "
            f"memory says {['obs', *names]} and {['action', *(n + '_out' for n in names)]}; "
            "export the policy again"
        )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
    )
    return LoadedPolicy(path=path, metadata=md, module=session, format="onnx")
