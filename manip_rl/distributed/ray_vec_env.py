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

Steps and resets travel over a **direct channel** (``transport="direct"``, the default): each
actor listens on its node's Ray address (``ray.util.get_node_ip_address()``, a port the OS picks)
and the driver connects to it with :mod:`multiprocessing.connection`, authenticated by a random
32-byte key the driver hands the actor through Ray (HMAC challenge both ways). A step then costs
one pickled message each way, as a pipe does, instead of a Ray task (about 1.8 ms of driver time
per call here; bench/ray_rollout.py). Ray still places, kills and replaces the actors and carries
the rare calls (``get_attr``, ``env_method``, render). ``transport="ray"`` sends the steps as Ray
actor calls too, for a cluster whose firewall opens only Ray's own ports.

Select it with ``vec_env: ray`` (``--vec-env ray``); ``n_workers`` is the number of actors
(default: one per CPU of the cluster, at most one per environment); ``ray_transport`` picks the
transport.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import AuthenticationError, Client, Connection, Listener
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
# A direct channel that stays silent this long gets its actor pinged through Ray (a dead actor's
# socket usually closes at once; a lost node's may not).
_SILENCE_S = 5.0
_PING_TIMEOUT_S = 30.0
TRANSPORTS = ("direct", "ray")


def _no_delay(conn: Connection) -> None:
    """TCP_NODELAY on a connection's socket: a message sent as header and body in two writes
    must not wait for the peer's delayed acknowledgement (Nagle)."""
    sock = socket.socket(fileno=conn.fileno())
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    finally:
        sock.detach()  # the connection keeps the descriptor


class EnvGroup:
    """One actor's environments (made with ``ray.remote`` in :class:`RayVecEnv`)."""

    def __init__(self, fns: Sequence[Callable[[], gym.Env]]) -> None:
        self.envs = [fn() for fn in fns]
        self.spaces = (self.envs[0].observation_space, self.envs[0].action_space)
        self.reset_infos: list[dict] = [{} for _ in self.envs]
        self._lock = threading.Lock()  # the channel's thread and Ray's calls share the envs

    def open_channel(self, authkey: bytes) -> tuple[str, int]:
        """Listen on this node's Ray address for the driver's direct channel; returns the
        address. Serves ``step``/``reset`` in a thread until the driver hangs up."""
        listener = Listener((ray.util.get_node_ip_address(), 0), authkey=authkey)
        threading.Thread(target=self._serve, args=(listener,), daemon=True).start()
        return listener.address

    def _serve(self, listener: Listener) -> None:
        with listener:
            while True:  # the first client that proves the key; others are turned away
                try:
                    conn = listener.accept()
                    break
                except (AuthenticationError, EOFError, OSError):
                    continue
        _no_delay(conn)
        with conn:
            while True:
                try:
                    cmd, payload = conn.recv()
                except (EOFError, OSError):
                    return  # the driver closed the channel (or died)
                try:
                    serve = {"step": self.step, "reset": self.reset}[cmd]  # nothing else
                    with self._lock:
                        answer = (True, serve(payload))
                except Exception as e:  # noqa: BLE001 - re-raised in the driver
                    answer = (False, _picklable(e))
                try:
                    conn.send(answer)
                except (EOFError, OSError):
                    return
                except Exception as e:  # noqa: BLE001 - pickling fails before anything is sent
                    conn.send((False, RuntimeError(f"the {cmd} result cannot be pickled: {e}")))

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
        with self._lock:
            return self._call(cmd, local, *payload)

    def _call(self, cmd: str, local: list[int], *payload: Any) -> list[Any]:
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
        with self._lock:
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
        transport: str = "direct",
    ) -> None:
        n_envs = len(env_fns)
        if transport not in TRANSPORTS:
            raise ValueError(f"transport={transport!r}: use one of {', '.join(TRANSPORTS)}")
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
        self.transport = transport
        self.actors = [self._actor_cls.remote(fns) for fns in self._fns]
        self._conns: list[Connection | None] = [None] * len(self.chunks)
        self._pending: list | None = None
        self._last_obs: list[VecEnvObs | None] = [None] * len(self.chunks)
        self.replacements = 0
        self.closed = False
        observation_space, action_space = ray.get(self.actors[0].get_spaces.remote())
        if transport == "direct":
            for g, actor in enumerate(self.actors):
                self._conns[g] = _open(actor)
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
        self._hang_up(group)
        self.replacements += 1
        chunk = self.chunks[group]
        seeds = [(self._base_seed + _RESEED_STRIDE * self.replacements + i, None) for i in chunk]
        deadline = time.monotonic() + _REPLACE_TIMEOUT_S
        while True:
            actor = self._actor_cls.remote(self._fns[group])
            try:
                obs, reset_infos = ray.get(actor.reset.remote(seeds), timeout=_REPLACE_TIMEOUT_S)
                conn = _open(actor) if self.transport == "direct" else None
                break
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError, OSError,
                    EOFError) as e:  # fmt: skip
                ray.kill(actor, no_restart=True)
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"RayVecEnv: the actor of environments {chunk.start}..{chunk.stop - 1} "
                        f"died and no replacement could start within {_REPLACE_TIMEOUT_S:.0f} s "
                        f"({type(e).__name__}); check the cluster's free CPUs (`ray status`)"
                    ) from e
        self.actors[group], self._conns[group] = actor, conn
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

    def _hang_up(self, group: int) -> None:
        conn, self._conns[group] = self._conns[group], None
        if conn is not None:
            try:
                conn.close()
            except OSError:
                pass

    # ------------------------------------------------------------------ the two transports
    def _send(self, cmd: str, payloads: list[Any]) -> list[Any]:
        """Start ``cmd`` on every actor: a message on its channel (``None`` when the send
        failed: the actor is gone) or a Ray object ref."""
        if self.transport == "ray":
            return [getattr(a, cmd).remote(p) for a, p in zip(self.actors, payloads, strict=True)]
        sent = []
        for conn, payload in zip(self._conns, payloads, strict=True):
            try:
                conn.send((cmd, payload))
                sent.append(True)
            except (OSError, AttributeError):  # a closed or missing channel
                sent.append(None)
        return sent

    def _receive(self, group: int, ticket: Any) -> Any:
        """The answer to :meth:`_send`'s ``ticket`` of ``group``; raises ``_ActorGone`` when
        the actor died (its channel closed, or Ray says so) and re-raises an env's error."""
        if self.transport == "ray":
            try:
                return ray.get(ticket)
            except ray.exceptions.RayActorError as e:
                raise _ActorGone from e
        conn = self._conns[group]
        if ticket is None or conn is None:
            raise _ActorGone
        try:
            while not conn.poll(_SILENCE_S):
                ray.get(self.actors[group].where.remote(), timeout=_PING_TIMEOUT_S)
            ok, value = conn.recv()
        except (EOFError, OSError, ray.exceptions.RayActorError,
                ray.exceptions.GetTimeoutError) as e:  # fmt: skip
            raise _ActorGone from e
        if not ok:
            chunk = self.chunks[group]
            raise EnvError(
                f"RayVecEnv: environments {chunk.start}..{chunk.stop - 1} raised {value!r}"
            ) from value
        return value

    def _gather(self, tickets: list[Any], on_gone: Callable[[int], Any]) -> list[Any]:
        """Every group's answer (``on_gone(group)`` for a dead actor's). An env's error is
        raised after all answers are in, so no channel is left holding a stale one."""
        results, error = [], None
        for g, ticket in enumerate(tickets):
            try:
                results.append(self._receive(g, ticket))
            except _ActorGone:
                results.append(on_gone(g))
            except EnvError as e:
                error = error or e
        if error is not None:
            raise error
        return results

    # ------------------------------------------------------------------ stepping
    def step_async(self, actions: np.ndarray) -> None:
        self._pending = self._send("step", [actions[c.start : c.stop] for c in self.chunks])

    def step_wait(self) -> VecEnvStepReturn:
        pending, self._pending = self._pending, None
        assert pending is not None, "step_wait() without step_async()"
        results = self._gather(pending, self._replaced_step)
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
        tickets = self._send(
            "reset", [[(self._seeds[i], self._options[i]) for i in c] for c in self.chunks]
        )
        results = self._gather(tickets, self._replace)
        self._last_obs = [obs for obs, _ in results]
        self.reset_infos = [info for _, infos in results for info in infos]
        self._reset_seeds()
        self._reset_options()
        return _concat([obs for obs, _ in results])

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for g in range(len(self._conns)):
            self._hang_up(g)
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


class EnvError(RuntimeError):
    """An environment raised in its actor (the direct channel's form of Ray's RayTaskError)."""


class _ActorGone(Exception):
    """An actor died (or became unreachable) before answering."""


def _open(actor: Any) -> Connection:
    """The driver's end of ``actor``'s direct channel (a fresh random key for each)."""
    key = secrets.token_bytes(32)
    address = ray.get(actor.open_channel.remote(key), timeout=_REPLACE_TIMEOUT_S)
    conn = Client(tuple(address), authkey=key)
    _no_delay(conn)
    return conn


def _picklable(e: Exception) -> Exception:
    """``e`` if it pickles, else a RuntimeError carrying its text (to cross the channel)."""
    import pickle

    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(e).__name__}: {e}")


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
