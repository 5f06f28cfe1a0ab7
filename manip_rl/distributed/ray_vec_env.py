"""An SB3 ``VecEnv`` whose environments run in Ray actors, on any node of a cluster.

The learner stays in the driver (the training process); each actor holds a contiguous group of
the environments and steps them in turn, answering one call with stacked arrays, as
:class:`manip_rl.policies.vec_env.ChunkedSubprocVecEnv` does with its worker processes. Actors
are spread over the cluster's nodes (Ray's ``SPREAD`` scheduling), one CPU each.

A dead actor (its process killed, its node lost) does not stop training: the next call that
finds it dead starts a replacement with the same environment constructors, resets its
environments with fresh seeds and reports each of them as an episode cut short by time
(``done`` with ``info["TimeLimit.truncated"] = True``, ``info["terminal_observation"]`` the last
observation received, reward 0, ``info["ray_actor_replaced"] = True``), so the value target
bootstraps and nothing false enters the rollout. :attr:`RayVecEnv.replacements` counts them.

Select it with ``vec_env: ray`` (``--vec-env ray``); ``n_workers`` is the number of actors
(default: one per CPU of the cluster, at most one per environment).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)
from stable_baselines3.common.vec_env.subproc_vec_env import _stack_obs

from manip_rl.distributed.ray_session import connect, import_ray
from manip_rl.policies.vec_env import ByIndexCalls, by_worker, in_index_order

ray = import_ray()

# A replacement's environments are seeded from here on (seed + this * replacement + index), so
# they do not replay the episodes the run started with.
_RESEED_STRIDE = 100_003
_REPLACE_TIMEOUT_S = 120.0


class EnvGroup:
    """One actor's environments (made with ``ray.remote`` in :class:`RayVecEnv`)."""

    def __init__(self, fns: Sequence[Callable[[], gym.Env]]) -> None:
        self.envs = [fn() for fn in fns]
        self.spaces = (self.envs[0].observation_space, self.envs[0].action_space)
        self.reset_infos: list[dict] = [{} for _ in self.envs]

    def where(self) -> dict:
        import os

        ctx = ray.get_runtime_context()
        return {"pid": os.getpid(), "node_id": ctx.get_node_id()}

    def get_spaces(self) -> tuple:
        return self.spaces

    def step(self, actions: np.ndarray) -> tuple:
        obs_list, rewards, dones, infos = [], [], [], []
        for i, (env, action) in enumerate(zip(self.envs, actions, strict=True)):
            obs, reward, terminated, truncated, info = env.step(action)
            done = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if done:
                info["terminal_observation"] = obs
                obs, self.reset_infos[i] = env.reset()
            obs_list.append(obs)
            rewards.append(reward)
            dones.append(done)
            infos.append(info)
        return _stack_obs(obs_list, self.spaces[0]), rewards, dones, infos, self.reset_infos

    def reset(self, seeds_options: list[tuple[int | None, dict | None]]) -> tuple:
        obs_list = []
        for i, (env, (seed, options)) in enumerate(zip(self.envs, seeds_options, strict=True)):
            obs, self.reset_infos[i] = env.reset(
                seed=seed, **({"options": options} if options else {})
            )
            obs_list.append(obs)
        return _stack_obs(obs_list, self.spaces[0]), list(self.reset_infos)

    def call(self, cmd: str, local: list[int], *payload: Any) -> list[Any]:
        from stable_baselines3.common.env_util import is_wrapped

        envs = [self.envs[i] for i in local]
        if cmd == "get_attr":
            return [e.get_wrapper_attr(payload[0]) for e in envs]
        if cmd == "set_attr":
            return [setattr(e, payload[0], payload[1]) for e in envs]
        if cmd == "env_method":
            name, args, kwargs = payload
            return [e.get_wrapper_attr(name)(*args, **kwargs) for e in envs]
        if cmd == "is_wrapped":
            return [is_wrapped(e, payload[0]) for e in envs]
        if cmd == "has_attr":
            out = []
            for e in envs:
                try:
                    e.get_wrapper_attr(payload[0])
                    out.append(True)
                except AttributeError:
                    out.append(False)
            return out
        raise NotImplementedError(f"{cmd!r} is not an EnvGroup command")

    def render(self) -> list:
        return [env.render() for env in self.envs]

    def close(self) -> None:
        for env in self.envs:
            env.close()


class RayVecEnv(ByIndexCalls):
    """``n_workers`` Ray actors (default: one per cluster CPU, at most one per environment), each
    stepping a contiguous share of ``env_fns``; environment ``i`` keeps index ``i``.

    Connects to ``address`` (else ``RAY_ADDRESS``, else an embedded local Ray) unless the process
    is already connected (a Tune trial). ``seed`` is the base of a replacement's fresh seeds."""

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        n_workers: int | None = None,
        address: str | None = None,
        cpus_per_worker: float = 1.0,
        seed: int = 0,
    ) -> None:
        n_envs = len(env_fns)
        if n_envs == 0:
            raise ValueError("RayVecEnv needs at least one environment")
        if n_workers is not None and n_workers < 1:
            raise ValueError(f"n_workers={n_workers}: use 1 or more")
        self._owns_ray = connect(address)
        if n_workers is None:
            cpus = float(ray.cluster_resources().get("CPU", 1))
            n_workers = max(1, int(cpus // cpus_per_worker))
        n_workers = min(n_envs, n_workers)
        bounds = np.linspace(0, n_envs, n_workers + 1).round().astype(int)
        self.chunks = [range(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        self._where = [(w, i - c.start) for w, c in enumerate(self.chunks) for i in c]
        self._fns = [[env_fns[i] for i in c] for c in self.chunks]
        self._actor_cls = ray.remote(EnvGroup).options(
            num_cpus=cpus_per_worker, scheduling_strategy="SPREAD", max_restarts=0
        )
        self.actors = [self._actor_cls.remote(fns) for fns in self._fns]
        self._pending: list | None = None
        self._last_obs: list[VecEnvObs | None] = [None] * len(self.chunks)
        self.replacements = 0
        self.closed = False
        observation_space, action_space = ray.get(self.actors[0].get_spaces.remote())
        self._base_seed = int(seed)
        super().__init__(n_envs, observation_space, action_space)

    # ------------------------------------------------------------------ placement
    def placement(self) -> list[dict]:
        """Each actor's ``{"pid": ..., "node_id": ...}`` (for tests and logs)."""
        return ray.get([a.where.remote() for a in self.actors])

    # ------------------------------------------------------------------ failure handling
    def _replace(self, group: int) -> tuple[VecEnvObs, list[dict]]:
        """Start a new actor for ``group`` and reset its environments with fresh seeds."""
        ray.kill(self.actors[group], no_restart=True)
        self.replacements += 1
        chunk = self.chunks[group]
        seeds = [(self._base_seed + _RESEED_STRIDE * self.replacements + i, None) for i in chunk]
        deadline = time.monotonic() + _REPLACE_TIMEOUT_S
        while True:
            actor = self._actor_cls.remote(self._fns[group])
            try:
                obs, reset_infos = ray.get(actor.reset.remote(seeds), timeout=_REPLACE_TIMEOUT_S)
                break
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as e:
                ray.kill(actor, no_restart=True)
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"RayVecEnv: the actor of environments {chunk.start}..{chunk.stop - 1} "
                        f"died and no replacement could start within {_REPLACE_TIMEOUT_S:.0f} s "
                        f"({type(e).__name__}); check the cluster's free CPUs (`ray status`)"
                    ) from e
        self.actors[group] = actor
        print(
            f"RayVecEnv: the actor of environments {chunk.start}..{chunk.stop - 1} died; "
            f"replaced it (replacement {self.replacements}) and reset its environments"
        )
        return obs, reset_infos

    def _replaced_step(self, group: int) -> tuple:
        obs, reset_infos = self._replace(group)
        last = self._last_obs[group]
        n = len(self.chunks[group])
        infos = []
        for j in range(n):
            terminal = obs_at(last if last is not None else obs, j)
            infos.append(
                {"terminal_observation": terminal, "TimeLimit.truncated": True,
                 "ray_actor_replaced": True}
            )  # fmt: skip
        return obs, [0.0] * n, [True] * n, infos, reset_infos

    # ------------------------------------------------------------------ stepping
    def step_async(self, actions: np.ndarray) -> None:
        self._pending = [
            actor.step.remote(actions[c.start : c.stop])
            for actor, c in zip(self.actors, self.chunks, strict=True)
        ]

    def step_wait(self) -> VecEnvStepReturn:
        pending, self._pending = self._pending, None
        assert pending is not None, "step_wait() without step_async()"
        try:
            results = ray.get(pending)
        except ray.exceptions.RayActorError:
            results = []
            for g, ref in enumerate(pending):
                try:
                    results.append(ray.get(ref))
                except ray.exceptions.RayActorError:
                    results.append(self._replaced_step(g))
        rewards, dones, infos, reset_infos = [], [], [], []
        for g, (obs, r, d, i, ri) in enumerate(results):
            self._last_obs[g] = obs
            rewards += r
            dones += d
            infos += i
            reset_infos += ri
        self.reset_infos = reset_infos
        obs = _concat([res[0] for res in results])
        return obs, np.array(rewards, dtype=np.float32), np.array(dones), infos

    def reset(self) -> VecEnvObs:
        refs = [
            a.reset.remote([(self._seeds[i], self._options[i]) for i in c])
            for a, c in zip(self.actors, self.chunks, strict=True)
        ]
        results = []
        for g, ref in enumerate(refs):
            try:
                results.append(ray.get(ref))
            except ray.exceptions.RayActorError:
                results.append(self._replace(g))
        self._last_obs = [obs for obs, _ in results]
        self.reset_infos = [info for _, infos in results for info in infos]
        self._reset_seeds()
        self._reset_options()
        return _concat([obs for obs, _ in results])

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if ray.is_initialized():
            refs = [a.close.remote() for a in self.actors]
            try:
                ray.get(refs, timeout=30)
            except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
                pass  # a dead actor has nothing to close
            for a in self.actors:
                ray.kill(a, no_restart=True)
            if self._owns_ray:
                ray.shutdown()

    # ------------------------------------------------------------------ by index
    def _ask(self, indices: VecEnvIndices, cmd: str, *payload: Any) -> list[Any]:
        order = list(self._get_indices(indices))
        groups = by_worker(self._where, order)
        answers = {w: ray.get(self.actors[w].call.remote(cmd, local, *payload))
                   for w, local in groups.items()}  # fmt: skip
        return in_index_order(self._where, order, answers)

    def has_attr(self, attr_name: str) -> bool:
        return all(self._ask(None, "has_attr", attr_name))

    def get_images(self) -> Sequence[np.ndarray | None]:
        return [img for part in ray.get([a.render.remote() for a in self.actors]) for img in part]


def obs_at(obs: VecEnvObs, j: int) -> Any:
    """Environment ``j``'s observation out of a stacked one."""
    if isinstance(obs, dict):
        return {k: v[j] for k, v in obs.items()}
    if isinstance(obs, tuple):
        return tuple(v[j] for v in obs)
    return obs[j]


def _concat(parts: list[VecEnvObs]) -> VecEnvObs:
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if isinstance(parts[0], tuple):
        return tuple(np.concatenate([p[j] for p in parts]) for j in range(len(parts[0])))
    return np.concatenate(parts)
