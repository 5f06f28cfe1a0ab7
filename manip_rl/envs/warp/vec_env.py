"""The batched env: N worlds of a task on MuJoCo Warp behind Gymnasium's ``VectorEnv``.

Per step, on the device and for every world at once, it does what the CPU env's ``step`` does
(``manip_rl/envs/base.py``): sanitize the action, add the action noise, turn the action into
joint targets from the joint positions the policy observed (``policy_io``'s mapping, the
Jacobian for ``ee_delta``), delay the command by the world's actuator latency, step the physics
15 substeps, read the sensors with noise and bias, delay the reading by the world's observation
latency, build the observation with ``policy_io``'s gather index, and compute the reward and
success. Worlds whose episode ended are reset in the same step (``AutoresetMode.SAME_STEP``:
the returned observation is the new episode's first, the last one is in
``info["final_obs"]``), by the CPU env's own reset (:mod:`manip_rl.envs.warp.resets`).

Observations, rewards and flags are torch tensors on the device; actions may be torch tensors
or arrays.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from manip_rl import policy_io
from manip_rl.envs import registry, scene
from manip_rl.envs.base import PandaEnv
from manip_rl.envs.warp.batch import BatchedScene
from manip_rl.envs.warp.resets import HostResets, ResetBatch
from manip_rl.envs.warp.torch_ops import TORCH

NOISE_SOURCES = ("torch", "numpy")
_S = policy_io.SENSOR_SLICES
# Ring buffers of sensor readings and commands hold the longest latency the randomization
# validator admits (10 control steps) plus the newest entry, so ADR may widen latencies.
_HISTORY = 11


class WarpVecEnv(gym.vector.VectorEnv):
    """``num_envs`` worlds of a manip_rl task on MuJoCo Warp (see the module docstring).

    Arguments are the CPU env's (``reward_type``, ``action_mode``, ``randomization``,
    ``distance_threshold``, task arguments such as ``grasped_start``) plus ``device``
    (``"cpu"``: Warp's CPU device, ``"cuda"`` / ``"cuda:N"``), ``max_episode_steps`` (the
    registration's time limit) and ``noise``: ``"torch"`` draws the per-step sensor and action
    noise on the device (fast); ``"numpy"`` draws it from each world's own generator exactly as
    the CPU env does, on the host, so a world reproduces a CPU env step for step (the parity
    tests use it). ``before_reset(world, host_env)`` runs before each world's reset (ADR sets
    the episode's ranges there); ``batch_randomization=True`` gives the worlds their own model
    fields even when the env starts without randomization (ADR grows it from none).
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        task: str,
        num_envs: int,
        device: str = "cpu",
        max_episode_steps: int | None = None,
        noise: str = "torch",
        seed: int | None = None,
        before_reset: Callable[[int, PandaEnv], None] | None = None,
        batch_randomization: bool | None = None,
        **env_kwargs: Any,
    ) -> None:
        if noise not in NOISE_SOURCES:
            raise ValueError(f"noise={noise!r}: use one of {NOISE_SOURCES}")
        spec = registry.get(task)
        self.task_spec = spec
        module, _, cls = spec.entry_point.partition(":")
        import importlib

        host: PandaEnv = getattr(importlib.import_module(module), cls)(**env_kwargs)
        self.host_env = host
        self.num_envs = n = int(num_envs)
        self.device = torch.device(device)
        self.max_episode_steps = int(max_episode_steps or spec.episode_steps)
        self.reward_type = host.reward_type
        self.action_spec, self.layout = host.action_spec, host.layout
        self.control_period = host.control_period
        self._resets = HostResets(host, n, before_reset)
        self._randomized = (
            host._randomizer is not None if batch_randomization is None else batch_randomization
        )
        self.scene = BatchedScene(spec, n, device, randomized=self._randomized)
        self.single_observation_space = host.observation_space
        self.single_action_space = host.action_space
        self.observation_space = batch_space(self.single_observation_space, n)
        self.action_space = batch_space(self.single_action_space, n)
        self._noise = noise
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(int(seed) if seed is not None else int(torch.seed()))

        f32 = {"dtype": torch.float32, "device": self.device}
        ids, mj = self.scene.ids, self.scene.mj_model
        self._ids = ids
        self._arm_joints = torch.as_tensor(mj.dof_jntid[ids.arm_dof], device=self.device)
        self._offsets = torch.as_tensor(policy_io.SIM_JOINT_OFFSETS, **f32)
        a = self.action_spec
        self._lower = torch.as_tensor(a.lower, **f32)
        self._upper = torch.as_tensor(a.upper, **f32)
        self._home = torch.as_tensor(a.home, **f32)
        builder = policy_io.ObservationBuilder(self.layout)  # its gather index, reused
        self._index = torch.as_tensor(builder._index, device=self.device)
        self._split = builder._split
        self._threshold = float(host.distance_threshold)
        self._threshold_sq32 = torch.tensor(host._threshold_sq, **f32)
        self._terms = host._dense_terms  # the task's own reward terms, given xp=TORCH
        self._hold = host.success_hold_steps
        self._needs_grasp = host.dense_uses_grasp or self._hold is not None
        o = ids.object_qpos
        self._obj = slice(o, o + 7) if ids.object_body >= 0 else None
        finger_bodies = ids.arm_bodies[-2:]
        self._finger_geom = [
            torch.as_tensor(mj.geom_bodyid == b, device=self.device) for b in finger_bodies
        ]
        self._arange = torch.arange(n, device=self.device)

        A, S = a.dim, policy_io.SENSOR_DIM
        self._sensor_hist = torch.zeros((_HISTORY, n, S), **f32)
        self._cmd_hist = torch.zeros((_HISTORY, n, 7), **f32)
        self._grip_hist = torch.zeros((_HISTORY, n), **f32)
        self._ptr = 0
        self._observed = torch.zeros((n, S), **f32)
        self.goal = torch.zeros((n, 3), **f32)
        self._prev_action = torch.zeros((n, A), **f32)
        self._noise_std = torch.zeros((n, S), **f32)
        self._bias = torch.zeros((n, S), **f32)
        self._action_noise = torch.zeros(n, **f32)
        self._lat_a = torch.zeros(n, dtype=torch.long, device=self.device)
        self._lat_o = torch.zeros(n, dtype=torch.long, device=self.device)
        self.episode_steps = torch.zeros(n, dtype=torch.long, device=self.device)
        self._held = torch.zeros(n, dtype=torch.long, device=self.device)
        self.last_reset_infos: dict[int, dict] = {}
        self.flat_obs = torch.zeros((n, self.layout.flat_dim), **f32)
        self._started = False

    # ----------------------------------------------------------------- Gymnasium API
    def reset(
        self, *, seed: int | Sequence[int] | None = None, options: Mapping | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Reset every world: world i with ``seed + i`` (an int), ``seed[i]`` (a sequence), or
        continuing its own stream (None)."""
        n = self.num_envs
        if seed is None:
            seeds: list[int | None] = [None] * n
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(n)]
            self._generator.manual_seed(int(seed))
        else:
            seeds = [int(s) for s in seed]
            if len(seeds) != n:
                raise ValueError(f"seed: {len(seeds)} seeds for {n} worlds; give one per world")
        success = self._reset_worlds(list(range(n)), seeds, options)
        self._started = True
        obs = self._observation()
        return obs, {"is_success": success}

    def step(
        self, actions: torch.Tensor | np.ndarray
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, dict]:
        if not self._started:
            raise RuntimeError("call reset() before step()")
        n, A = self.num_envs, self.action_spec.dim
        a = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        if tuple(a.shape) != (n, A):
            raise ValueError(f"actions have shape {tuple(a.shape)}; this env takes ({n}, {A})")
        a = torch.where(torch.isfinite(a), a, torch.zeros_like(a)).clamp(-1.0, 1.0)
        applied, sensor_noise = a, None
        if self._randomized:  # one draw per step for the action and the sensor noise
            z = self._standard_normal(A + policy_io.SENSOR_DIM)
            sensor_noise = z[:, A:]
            noisy = (a + self._action_noise[:, None] * z[:, :A]).clamp(-1.0, 1.0)
            applied = torch.where(self._action_noise[:, None] > 0, noisy, a)
        targets, gripper = self._joint_targets(applied)
        self._ptr = ptr = (self._ptr + 1) % _HISTORY
        self._cmd_hist[ptr], self._grip_hist[ptr] = targets, gripper
        delayed = (ptr - self._lat_a) % _HISTORY  # actuator latency: the command of lat_a ago
        ids, state = self._ids, self.scene.state
        state.ctrl[:, ids.arm_actuators] = self._cmd_hist[delayed, self._arange] - self._offsets
        if self.task_spec.gripper:
            grip = self._grip_hist[delayed, self._arange]
            state.ctrl[:, ids.finger_actuators] = 0.5 * grip[:, None]
        self.scene.step(scene.SUBSTEPS)
        # MuJoCo Warp does not reset a diverging world as the CPU mj_step does; a world whose
        # state is no longer finite ends its episode (truncated) as the CPU env's does.
        unstable = ~torch.isfinite(state.qpos).all(dim=1) | ~torch.isfinite(state.qvel).all(1)
        grasped = self._grasped() if self._needs_grasp else None
        if self._hold is not None:  # PandaLift: control periods the cube has been lifted, held
            lifted = self._true_distance_sq() < self._threshold**2
            self._held = torch.where(lifted & (grasped > 0), self._held + 1, 0)
        self._prev_action = a
        self._sensor_hist[ptr] = self._measure(sensor_noise)
        self._observed = self._sensor_hist[(ptr - self._lat_o) % _HISTORY, self._arange]
        obs = self._observation()
        ee = obs["observation"][:, self.layout.slices()["ee_pos"]]
        terms = self._reward_terms(obs["achieved_goal"], obs["desired_goal"], ee, grasped)
        reward = sum(terms.values())
        success = torch.where(unstable, 0.0, self._success())
        self.episode_steps += 1
        truncated = (self.episode_steps >= self.max_episode_steps) | unstable
        terminated = torch.zeros_like(truncated)  # no terminal states (SB3 #633)
        info: dict[str, Any] = {"is_success": success, "reward_terms": terms, "ee_pos": ee}
        if grasped is not None:
            info["is_grasped"] = grasped
        info["physics_unstable"] = unstable
        if bool(truncated.any()):
            info["final_obs"] = obs
            info["_final_obs"] = truncated
            info["final_info"] = {"is_success": success.clone()}
            worlds = torch.nonzero(truncated).flatten().tolist()
            self._reset_worlds(worlds, None, None)
            obs = self._observation()
        return obs, reward, terminated, truncated, info

    def close_extras(self, **kwargs: Any) -> None:
        self.host_env.close()

    # ----------------------------------------------------------------- resets
    def _reset_worlds(
        self, worlds: list[int], seeds: Sequence[int | None] | None, options: Mapping | None
    ) -> torch.Tensor:
        rb: ResetBatch = self._resets.reset(worlds, seeds, options)
        w = torch.as_tensor(worlds, dtype=torch.long, device=self.device)
        if self._randomized:
            self.scene.write_fields(w, rb.fields)
        self.scene.write_state(w, rb.state)
        self.scene.kinematics()

        def put(x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(np.asarray(x), dtype=dtype, device=self.device)

        self.goal[w] = put(rb.goal)
        self._sensor_hist[:, w] = put(rb.sensors)  # every slot: the latency reads the first
        self._cmd_hist[:, w] = put(rb.hold_targets)
        self._grip_hist[:, w] = put(rb.hold_gripper)
        self._observed[w] = put(rb.sensors)
        self._noise_std[w], self._bias[w] = put(rb.noise_std), put(rb.bias)
        self._action_noise[w] = put(rb.action_noise)
        self._lat_a[w] = put(rb.action_latency, torch.long)
        self._lat_o[w] = put(rb.observation_latency, torch.long)
        self._prev_action[w] = 0.0
        self.episode_steps[w] = 0
        self._held[w] = 0
        for world, info in zip(worlds, rb.infos, strict=True):
            self.last_reset_infos[world] = info
        success = torch.zeros(self.num_envs, dtype=torch.float32, device=self.device)
        success[w] = put(rb.is_success)
        return success

    # ----------------------------------------------------------------- pieces of a step
    def _standard_normal(self, dim: int) -> torch.Tensor:
        if self._noise == "numpy":
            z = self._resets.standard_normal(dim)
            return torch.as_tensor(z, dtype=torch.float32, device=self.device)
        return torch.randn((self.num_envs, dim), generator=self._generator, device=self.device)

    def _joint_targets(self, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """policy_io.sanitized_action_to_joint_targets for every world, from the observed joint
        positions (and TCP position, for ee_delta's floor), as on the robot."""
        spec = self.action_spec
        q = self._observed[:, _S["joint_pos"]]
        if spec.mode == policy_io.JOINT_DELTA:
            dq = spec.joint_scale * action[:, :7]
        else:
            jac = self._ee_jacobian()
            dx = spec.ee_scale * action[:, :3]
            if spec.ee_z_min is not None:
                floor = spec.ee_z_min - self._observed[:, _S["ee_pos"].start + 2]
                dx = torch.cat((dx[:, :2], torch.maximum(dx[:, 2], floor)[:, None]), dim=1)
            if spec.ee_posture_gain > 0:
                v = spec.ee_posture_gain * (self._home - q)
                dq = _damped_least_squares(jac, dx - (jac @ v[:, :, None])[:, :, 0]) + v
            else:
                dq = _damped_least_squares(jac, dx)
        targets = torch.minimum(torch.maximum(q + dq, self._lower), self._upper)
        if spec.gripper:
            gripper = (action[:, -1] + 1.0) * 0.5 * policy_io.GRIPPER_MAX_OPENING
        else:
            gripper = torch.zeros(self.num_envs, dtype=torch.float32, device=self.device)
        return targets, gripper

    def _ee_jacobian(self) -> torch.Tensor:
        """The TCP's 3x7 position Jacobian of every world (true state), as ``mj_jacSite``: for
        each arm hinge, its axis crossed with the lever from its anchor to the TCP."""
        s = self.scene.state
        ee = s.site_xpos[:, self._ids.ee_site]  # (N, 3)
        axis, anchor = s.xaxis[:, self._arm_joints], s.xanchor[:, self._arm_joints]  # (N, 7, 3)
        cols = torch.linalg.cross(axis, ee[:, None, :] - anchor, dim=-1)
        return cols.transpose(1, 2)  # (N, 3, 7)

    def _measure(self, noise: torch.Tensor | None) -> torch.Tensor:
        """The sensor vector (policy_io.SENSOR_FIELDS order) of every world, true state plus
        the per-step noise and the episode's bias."""
        s, ids = self.scene.state, self._ids
        f = ids.finger_qpos.start
        obj = (
            s.qpos[:, self._obj]
            if self._obj is not None
            else torch.zeros((self.num_envs, 7), dtype=torch.float32, device=self.device)
        )
        v = torch.cat(
            (
                s.qpos[:, ids.arm_qpos] + self._offsets,
                s.qvel[:, ids.arm_dof],
                s.site_xpos[:, ids.ee_site],
                (s.qpos[:, f] + s.qpos[:, f + 1])[:, None],
                obj,
            ),
            dim=1,
        )
        if noise is not None:
            v = v + self._noise_std * noise + self._bias
        return v

    def _observation(self) -> dict[str, torch.Tensor]:
        sensors = self._observed
        rel = sensors[:, _S["object_pos"]] - sensors[:, _S["ee_pos"]]
        src = torch.cat((sensors, rel, self.goal, self._prev_action), dim=1)
        self.flat_obs = flat = src.index_select(1, self._index)
        a, b = self._split
        return {
            "observation": flat[:, b:],
            "achieved_goal": flat[:, :a],
            "desired_goal": flat[:, a:b],
        }

    def _reward_terms(
        self,
        achieved: torch.Tensor,
        desired: torch.Tensor,
        ee: torch.Tensor,
        grasped: torch.Tensor | None,
    ) -> dict[str, torch.Tensor]:
        if self.reward_type == "sparse":
            diff = achieved - desired
            far = torch.sum(diff * diff, dim=1) > self._threshold_sq32
            return {"goal_reached": -far.to(torch.float32)}
        return self._terms(achieved, desired, ee, grasped, xp=TORCH)

    def _true_achieved(self) -> torch.Tensor:
        s = self.scene.state
        if self._obj is None:  # PandaReach: the TCP
            return s.site_xpos[:, self._ids.ee_site]
        return s.qpos[:, self._obj.start : self._obj.start + 3]

    def _true_distance_sq(self) -> torch.Tensor:
        diff = self._true_achieved() - self.goal
        return torch.sum(diff * diff, dim=1)

    def _success(self) -> torch.Tensor:
        if self._hold is not None:
            return (self._held >= self._hold).to(torch.float32)
        return (self._true_distance_sq() < self._threshold**2).to(torch.float32)

    def _grasped(self) -> torch.Tensor:
        """1.0 where both fingers touch the cube (the CPU env's ``is_grasped``), per world."""
        geom, world = self.scene.contact_pairs()
        obj = self._ids.object_geom
        other = torch.where(
            geom[:, 0] == obj, geom[:, 1], torch.where(geom[:, 1] == obj, geom[:, 0], -1)
        )
        keep = other >= 0
        other, world = other[keep].long(), world[keep].long()
        touch = []
        for mask in self._finger_geom:
            hit = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
            hit[world[mask[other]]] = True
            touch.append(hit)
        return (touch[0] & touch[1]).to(torch.float32)


def _damped_least_squares(jac: torch.Tensor, dx: torch.Tensor, damping: float = 0.05):
    """policy_io.damped_least_squares, batched: J^T (J J^T + damping^2 I)^-1 dx."""
    eye = torch.eye(jac.shape[1], dtype=jac.dtype, device=jac.device)
    jjt = jac @ jac.transpose(1, 2) + (damping**2) * eye
    return (jac.transpose(1, 2) @ torch.linalg.solve(jjt, dx[:, :, None]))[:, :, 0]
