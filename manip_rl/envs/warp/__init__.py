"""Batched manip_rl tasks on MuJoCo Warp: N randomized worlds per step, on a GPU or on Warp's
CPU device, reached the Gymnasium way::

    envs = gym.make_vec("manip_rl/PandaPush-v0", num_envs=1024,
                        vectorization_mode="vector_entry_point", backend="warp", device="cuda")

Needs the ``warp`` extra (``pip install -e .[warp]``). Modules: :mod:`.batch` (the worlds on
the device, per-world model fields), :mod:`.resets` (resets by the CPU env's own code),
:mod:`.torch_ops` (numpy's names on torch, for the tasks' own reward terms), :mod:`.vec_env` (the ``VectorEnv``). See docs/warp.md.
"""

from __future__ import annotations

from typing import Any

BACKENDS = ("warp",)


def check_device(device: str) -> str:
    """``device`` checked: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` with such a device present;
    the error names the argument and what to use."""
    if not isinstance(device, str) or not (
        device == "cpu" or device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())
    ):
        raise ValueError(f"device={device!r}: use 'cpu' (Warp's CPU device), 'cuda' or 'cuda:N'")
    if device.startswith("cuda"):
        import torch
        import warp as wp

        wp.init()
        index = int(device[5:]) if ":" in device else 0
        if not torch.cuda.is_available() or wp.get_cuda_device_count() <= index:
            raise ValueError(
                f"device={device!r}: no such CUDA device here (torch sees "
                f"{torch.cuda.device_count()}, Warp {wp.get_cuda_device_count()}); use "
                "device='cpu' for Warp's CPU device"
            )
        return f"cuda:{index}"
    return device


def make_vec(
    num_envs: int, task: str, backend: str = "cpu", device: str | None = None, **kwargs: Any
):
    """The vector entry point of every manip_rl id (``gym.make_vec(..., backend=, device=)``).

    ``backend``: ``"warp"`` for the batched worlds; ``"cpu"`` (the default: what
    ``gym.make_vec(ID, num_envs=N)`` gives, Gymnasium choosing this entry point whenever an id
    has one) is a ``SyncVectorEnv`` of the CPU env, as before the batched backend existed.
    ``device``: see :func:`check_device` (warp only, default ``"cpu"``); other keyword arguments
    are the CPU env's and :class:`~manip_rl.envs.warp.vec_env.WarpVecEnv`'s.
    """
    if backend == "cpu":
        if device is not None:
            raise ValueError(
                f"device={device!r} applies to backend='warp'; the CPU env runs on the CPU"
            )
        import gymnasium as gym

        from manip_rl.envs import registry

        spec = registry.get(task)
        env_id = spec.dense_env_id if kwargs.get("reward_type") == "dense" else spec.env_ids[0]
        return gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync", **kwargs)
    if backend not in BACKENDS:
        raise ValueError(
            f"backend={backend!r}: use 'warp' (the batched worlds) or 'cpu' (the CPU env in a "
            f"SyncVectorEnv, the default); the batched backends are {BACKENDS}"
        )
    device = "cpu" if device is None else device
    if not isinstance(num_envs, int) or num_envs < 1:
        raise ValueError(f"num_envs={num_envs!r}: a positive number of worlds")
    for unsupported in ("render_mode", "trajectory_robot"):
        if kwargs.get(unsupported) is not None:
            raise ValueError(
                f"{unsupported}={kwargs[unsupported]!r} is not supported by backend='warp'; "
                "use the CPU env (gym.make) for it"
            )
    device = check_device(device)
    try:
        from manip_rl.envs.warp.vec_env import WarpVecEnv
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(
            f"backend='warp' needs {e.name}: install the warp extra "
            "(`pip install -e .[warp]`, or scripts/setup.sh)"
        ) from e
    return WarpVecEnv(task, num_envs, device=device, **kwargs)
