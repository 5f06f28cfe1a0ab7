"""A vector env that runs several environments per worker process.

SB3's ``SubprocVecEnv`` gives every environment its own process: with 8 environments on a
2-core machine, each step wakes 8 processes, makes 16 pipe transfers and lets the scheduler
juggle 9 runnable processes. :class:`ChunkedSubprocVecEnv` runs one worker per core, each
stepping its share of the environments in turn and answering with one message of stacked
arrays. Semantics are SB3's: automatic reset with ``info["terminal_observation"]`` and
``info["TimeLimit.truncated"]``, per-environment seeds and options, ``env_method``,
``get_attr``/``set_attr`` and ``env_is_wrapped`` by environment index.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import (
    CloudpickleWrapper,
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)
from stable_baselines3.common.vec_env.subproc_vec_env import _stack_obs


def _worker(remote, parent_remote, fns_wrapper: CloudpickleWrapper) -> None:  # noqa: C901
    from stable_baselines3.common.env_util import is_wrapped

    parent_remote.close()
    envs = [fn() for fn in fns_wrapper.var]
    spaces = (envs[0].observation_space, envs[0].action_space)
    reset_infos: list[dict] = [{} for _ in envs]
    while True:
        try:
            cmd, data = remote.recv()
        except (EOFError, KeyboardInterrupt):
            break
        if cmd == "step":
            obs_list, rewards, dones, infos = [], [], [], []
            for i, (env, action) in enumerate(zip(envs, data, strict=True)):
                obs, reward, terminated, truncated, info = env.step(action)
                done = terminated or truncated
                info["TimeLimit.truncated"] = truncated and not terminated
                if done:
                    info["terminal_observation"] = obs
                    obs, reset_infos[i] = env.reset()
                obs_list.append(obs)
                rewards.append(reward)
                dones.append(done)
                infos.append(info)
            remote.send((_stack_obs(obs_list, spaces[0]), rewards, dones, infos, reset_infos))
        elif cmd == "reset":
            obs_list = []
            for i, (env, (seed, options)) in enumerate(zip(envs, data, strict=True)):
                obs, reset_infos[i] = env.reset(
                    seed=seed, **({"options": options} if options else {})
                )
                obs_list.append(obs)
            remote.send((_stack_obs(obs_list, spaces[0]), reset_infos))
        elif cmd == "get_spaces":
            remote.send(spaces)
        elif cmd == "env_method":
            local, name, args, kwargs = data
            remote.send([envs[i].get_wrapper_attr(name)(*args, **kwargs) for i in local])
        elif cmd == "get_attr":
            local, name = data
            remote.send([envs[i].get_wrapper_attr(name) for i in local])
        elif cmd == "has_attr":
            ok = True
            for env in envs:
                try:
                    env.get_wrapper_attr(data)
                except AttributeError:
                    ok = False
            remote.send(ok)
        elif cmd == "set_attr":
            local, name, value = data
            remote.send([setattr(envs[i], name, value) for i in local])
        elif cmd == "is_wrapped":
            local, wrapper = data
            remote.send([is_wrapped(envs[i], wrapper) for i in local])
        elif cmd == "render":
            remote.send([env.render() for env in envs])
        elif cmd == "close":
            for env in envs:
                env.close()
            remote.close()
            break
        else:
            raise NotImplementedError(f"{cmd!r} is not a ChunkedSubprocVecEnv command")


class ByIndexCalls(VecEnv):
    """The VecEnv calls addressed to environments by index, for a vec env whose environments
    live in groups elsewhere (worker processes, Ray actors): each is one ``_ask(indices, cmd,
    *payload)``, which the subclass implements (send to each group its envs' local indices,
    answers back in index order)."""

    def _ask(self, indices: VecEnvIndices, cmd: str, *payload: Any) -> list[Any]:
        raise NotImplementedError

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._ask(indices, "get_attr", attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._ask(indices, "set_attr", attr_name, value)

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        return self._ask(indices, "env_method", method_name, method_args, method_kwargs)

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        return self._ask(indices, "is_wrapped", wrapper_class)


class ChunkedSubprocVecEnv(ByIndexCalls):
    """``n_workers`` processes (default: the number of CPUs, at most one per environment), each
    running a contiguous share of ``env_fns``; environment ``i`` keeps index ``i``."""

    def __init__(
        self,
        env_fns: Sequence[Callable[[], gym.Env]],
        n_workers: int | None = None,
        start_method: str = "forkserver",
    ) -> None:
        n_envs = len(env_fns)
        if n_envs == 0:
            raise ValueError("ChunkedSubprocVecEnv needs at least one environment")
        n_workers = min(n_envs, n_workers or os.cpu_count() or 1)
        if n_workers < 1:
            raise ValueError(f"n_workers={n_workers}: use 1 or more")
        bounds = np.linspace(0, n_envs, n_workers + 1).round().astype(int)
        self.chunks = [range(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
        # environment index -> (worker, index inside the worker)
        self._where = [(w, i - c.start) for w, c in enumerate(self.chunks) for i in c]
        self.waiting = False
        self.closed = False
        ctx = mp.get_context(start_method)
        self.remotes, work_remotes = zip(*[ctx.Pipe() for _ in self.chunks], strict=True)
        self.processes = []
        for work, remote, chunk in zip(work_remotes, self.remotes, self.chunks, strict=True):
            fns = CloudpickleWrapper([env_fns[i] for i in chunk])
            proc = ctx.Process(target=_worker, args=(work, remote, fns), daemon=True)
            proc.start()
            self.processes.append(proc)
            work.close()
        self.remotes[0].send(("get_spaces", None))
        observation_space, action_space = self.remotes[0].recv()
        super().__init__(n_envs, observation_space, action_space)

    # ------------------------------------------------------------------ stepping
    def step_async(self, actions: np.ndarray) -> None:
        for remote, chunk in zip(self.remotes, self.chunks, strict=True):
            remote.send(("step", actions[chunk.start : chunk.stop]))
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        results = [remote.recv() for remote in self.remotes]
        self.waiting = False
        rewards, dones, infos, reset_infos = [], [], [], []
        for _, r, d, i, ri in results:
            rewards += r
            dones += d
            infos += i
            reset_infos += ri
        self.reset_infos = reset_infos
        obs = self._concat([res[0] for res in results])
        return obs, np.array(rewards, dtype=np.float32), np.array(dones), infos

    def reset(self) -> VecEnvObs:
        for remote, chunk in zip(self.remotes, self.chunks, strict=True):
            remote.send(("reset", [(self._seeds[i], self._options[i]) for i in chunk]))
        results = [remote.recv() for remote in self.remotes]
        self.reset_infos = [info for _, infos in results for info in infos]
        self._reset_seeds()
        self._reset_options()
        return self._concat([obs for obs, _ in results])

    def _concat(self, parts: list[VecEnvObs]) -> VecEnvObs:
        if isinstance(parts[0], dict):
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if isinstance(parts[0], tuple):
            return tuple(np.concatenate([p[j] for p in parts]) for j in range(len(parts[0])))
        return np.concatenate(parts)

    def close(self) -> None:
        if self.closed:
            return
        if self.waiting:
            for remote in self.remotes:
                remote.recv()
        for remote in self.remotes:
            remote.send(("close", None))
        for proc in self.processes:
            proc.join()
        for remote in self.remotes:
            remote.close()
        self.closed = True

    # ------------------------------------------------------------------ by index
    def _ask(self, indices: VecEnvIndices, cmd: str, *payload: Any) -> list[Any]:
        order = list(self._get_indices(indices))
        groups = by_worker(self._where, order)
        for w, local in groups.items():
            self.remotes[w].send((cmd, (local, *payload)))
        answers = {w: self.remotes[w].recv() for w in groups}
        return in_index_order(self._where, order, answers)

    def has_attr(self, attr_name: str) -> bool:
        for remote in self.remotes:
            remote.send(("has_attr", attr_name))
        return all([remote.recv() for remote in self.remotes])

    def get_images(self) -> Sequence[np.ndarray | None]:
        for remote in self.remotes:
            remote.send(("render", None))
        return [img for remote in self.remotes for img in remote.recv()]


def by_worker(where: Sequence[tuple[int, int]], indices: Sequence[int]) -> dict[int, list[int]]:
    """The env indices grouped by worker: {worker: [its local indices, in the given order]};
    ``where[i]`` is env ``i``'s (worker, local index)."""
    out: dict[int, list[int]] = {}
    for i in indices:
        w, local = where[i]
        out.setdefault(w, []).append(local)
    return out


def in_index_order(
    where: Sequence[tuple[int, int]], indices: Sequence[int], answers: Mapping[int, Sequence[Any]]
) -> list[Any]:
    """The workers' answers (each in its :func:`by_worker` order) back in the order of
    ``indices``."""
    out, seen = [], dict.fromkeys(answers, 0)
    for i in indices:
        w, _ = where[i]
        out.append(answers[w][seen[w]])
        seen[w] += 1
    return out
