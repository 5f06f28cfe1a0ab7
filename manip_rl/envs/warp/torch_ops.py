"""numpy's names, on torch tensors, for the few array functions the tasks' reward terms use.

Each task writes its dense reward once, in its own module (``_dense_terms(..., xp=np)``), with
``xp.`` where it would write ``np.``. The batched backend passes :data:`TORCH` as ``xp`` and
gets the same formulas on the device, batched by world, with no round trip to numpy
(tests/test_warp_env.py checks every task against the CPU env's ``compute_reward``). A function
a task needs that is not here fails loudly with the name to add.
"""

from __future__ import annotations

from typing import Any

import torch


class _TorchAsNumpy:
    """``xp`` for torch tensors: the numpy signatures the reward terms call."""

    float64 = None  # asarray(x, dtype=xp.float64) keeps the batch's dtype (float32)

    sqrt = staticmethod(torch.sqrt)
    tanh = staticmethod(torch.tanh)

    @staticmethod
    def sum(x: torch.Tensor, axis: int | None = None, keepdims: bool = False) -> torch.Tensor:
        return torch.sum(x, dim=axis, keepdim=keepdims) if axis is not None else torch.sum(x)

    @staticmethod
    def maximum(x: torch.Tensor, y: Any) -> torch.Tensor:
        return torch.maximum(x, y) if isinstance(y, torch.Tensor) else torch.clamp(x, min=y)

    @staticmethod
    def where(cond: torch.Tensor, a: Any, b: Any) -> torch.Tensor:
        return torch.where(cond, a, b)

    @staticmethod
    def asarray(x: Any, dtype: Any = None) -> torch.Tensor:
        return torch.as_tensor(x) if dtype is None else torch.as_tensor(x, dtype=dtype)

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(
            f"manip_rl/envs/warp/torch_ops.py has no {name!r}: a task's reward terms called "
            f"xp.{name}; add its torch form there so the batched backend can run the task"
        )


TORCH = _TorchAsNumpy()
