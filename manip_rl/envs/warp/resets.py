"""Resets of batched worlds, drawn by the CPU env's own code.

A world is reset by running the task's CPU env's ``reset`` on the host with that world's random
generator, then copying what it produced (state, randomized model fields, goal, first sensor
reading, latencies, noise levels) into the world. The draws are therefore the CPU env's by
construction: world i reset with seed s+i starts exactly where ``gym.make(ID).reset(seed=s+i)``
starts (up to float32), with the same randomization sample. Each world keeps its own
``np.random.Generator``, so a world's later episodes continue its stream as a CPU env's do.

Resets run on the host, a few hundred microseconds per world (an ``mj_forward`` and the draw);
with 100-step episodes about 1% of the worlds reset per step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.utils import seeding

from manip_rl import policy_io
from manip_rl.envs.base import PandaEnv
from manip_rl.envs.warp.batch import RANDOMIZED_FIELDS, STATE_FIELDS


@dataclasses.dataclass
class ResetBatch:
    """What resetting ``len(worlds)`` worlds produced, stacked by world (numpy, float64)."""

    state: dict[str, np.ndarray]  # STATE_FIELDS
    fields: dict[str, np.ndarray]  # RANDOMIZED_FIELDS and gravity, as the host model holds them
    goal: np.ndarray  # (k, 3)
    sensors: np.ndarray  # (k, SENSOR_DIM): the first reading, noise and bias included
    hold_targets: np.ndarray  # (k, 7): the arm command held during the actuator latency
    hold_gripper: np.ndarray  # (k,): the gripper opening held (0 without a gripper)
    noise_std: np.ndarray  # (k, SENSOR_DIM): per-step sensor noise std
    bias: np.ndarray  # (k, SENSOR_DIM): this episode's sensor bias
    action_noise: np.ndarray  # (k,)
    action_latency: np.ndarray  # (k,) control steps
    observation_latency: np.ndarray  # (k,)
    is_success: np.ndarray  # (k,)
    infos: list[dict]  # the CPU env's reset info of each world (its randomization draw)


class HostResets:
    """One CPU env of the task (built with the batched env's arguments) that resets worlds, and
    the random generator of each world."""

    def __init__(
        self, env: PandaEnv, nworld: int, before_reset: Callable[[int, PandaEnv], None] | None
    ) -> None:
        self.env = env
        self.rngs: list[np.random.Generator | None] = [None] * int(nworld)
        # Called with (world, host env) before each world's reset: ADR sets the episode's
        # ranges there (manip_rl.policies.train_warp), as AdrWrapper does before a CPU reset.
        self.before_reset = before_reset

    def reset(
        self,
        worlds: Sequence[int],
        seeds: Sequence[int | None] | None = None,
        options: Mapping | None = None,
    ) -> ResetBatch:
        """Reset ``worlds``, world ``worlds[k]`` with ``seeds[k]`` (None: continue its stream)."""
        env = self.env
        seeds = seeds if seeds is not None else [None] * len(worlds)
        rows: list[dict[str, Any]] = []
        for world, seed in zip(worlds, seeds, strict=True):
            if seed is None:
                if self.rngs[world] is None:
                    self.rngs[world], _ = seeding.np_random(None)
                env._np_random = self.rngs[world]  # reset(seed=None) keeps the generator
            if self.before_reset is not None:
                self.before_reset(world, env)
            _, info = env.reset(seed=None if seed is None else int(seed), options=options)
            self.rngs[world] = env.np_random
            rows.append(self._capture(info))
        return ResetBatch(
            state={k: np.stack([r["state"][k] for r in rows]) for k in STATE_FIELDS},
            fields={k: np.stack([r["fields"][k] for r in rows]) for k in rows[0]["fields"]},
            **{
                k: np.stack([r[k] for r in rows])
                for k in (
                    "goal",
                    "sensors",
                    "hold_targets",
                    "hold_gripper",
                    "noise_std",
                    "bias",
                    "action_noise",
                    "action_latency",
                    "observation_latency",
                    "is_success",
                )
            },  # fmt: skip
            infos=[r["info"] for r in rows],
        )

    def standard_normal(self, dim: int) -> np.ndarray:
        """One step's noise draw of every world from its own generator, as the CPU env's
        ``step`` draws it (``standard_normal(act_dim + SENSOR_DIM)``)."""
        return np.stack([rng.standard_normal(dim) for rng in self.rngs])

    def _capture(self, info: dict) -> dict[str, Any]:
        env = self.env
        m, d, ids = env.model, env.data, env.ids
        randomized = env._randomizer is not None
        # Always taken (a few small arrays): the worlds may carry their own fields while this
        # episode draws none (ADR starting from nominal).
        fields = {name: getattr(m, name).copy() for name in RANDOMIZED_FIELDS}
        fields["gravity"] = m.opt.gravity.copy()
        sample = env.randomization_sample if randomized else None
        n = policy_io.SENSOR_DIM
        return {
            "state": {k: np.atleast_1d(getattr(d, k)).copy() for k in STATE_FIELDS},
            "fields": fields,
            "goal": np.asarray(env.goal, dtype=np.float64).copy(),
            "sensors": env._sensor_history[0].copy(),
            "hold_targets": d.ctrl[ids.arm_actuators] + policy_io.SIM_JOINT_OFFSETS,
            "hold_gripper": 2.0 * float(d.ctrl[ids.finger_actuators][0])
            if env.has_gripper
            else 0.0,
            "noise_std": env._noise_vec.copy() if env._noise_vec is not None else np.zeros(n),
            "bias": env._bias_vec.copy(),
            "action_noise": env._action_noise if randomized else 0.0,
            "action_latency": sample.action_latency if sample else 0,
            "observation_latency": sample.observation_latency if sample else 0,
            "is_success": float(info["is_success"]),
            "info": info,
        }
