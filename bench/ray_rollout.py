"""Ray rollout workers (``vec_env: ray``) against the chunked vec env, one machine, one run.

Run inside a loopback-only network namespace (Ray must not use another interface):

    unshare -n sh -c 'ip link set lo up; PYTHONPATH=$PWD .venv/bin/python bench/ray_rollout.py'

Measures, interleaving the two backends ``--repeats`` times (the machine may be shared):
- env steps per second of ChunkedSubprocVecEnv(n_workers=W) and RayVecEnv(n_workers=W) on the
  task's randomized env, zero actions;
- the overhead per synchronization: the same with an env that does nothing (same spaces), so a
  step is only the transfer of actions and observations;
- the driver's cost per actor call (many do-nothing actors);
- the bytes per step each actor sends and receives (pickled as they travel).
``ray`` is RayVecEnv's default direct channel, ``ray_calls`` its ``transport="ray"`` (each step a
Ray actor call).
It prints one JSON object and the scaling estimate of docs/distributed.md is made from it.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import time

import gymnasium as gym
import numpy as np


class NullEnv(gym.Env):
    """The task env's spaces, no physics: a step costs only its transfer."""

    def __init__(self, observation_space, action_space) -> None:
        self.observation_space, self.action_space = observation_space, action_space
        self._obs = observation_space.sample() * 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self._obs, {}

    def step(self, action):
        return self._obs, 0.0, False, False, {}


class NullFactory:
    def __init__(self, spaces) -> None:
        self.spaces = spaces

    def __call__(self) -> gym.Env:
        return NullEnv(*self.spaces)


def _rate(venv, steps: int) -> float:
    venv.reset()
    a = np.zeros((venv.num_envs, *venv.action_space.shape), np.float32)
    for _ in range(20):
        venv.step(a)
    t = time.perf_counter()
    for _ in range(steps):
        venv.step(a)
    return steps / (time.perf_counter() - t)


def main() -> None:
    from manip_rl.distributed.netns import require_loopback_only

    require_loopback_only("bench/ray_rollout.py")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="PandaPush")
    p.add_argument("--n-envs", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="worker processes / actors")
    p.add_argument("--steps", type=int, default=300, help="vec steps per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--call-actors", type=int, default=8, help="do-nothing actors, call cost")
    args = p.parse_args()

    import ray

    from manip_rl.distributed.ray_vec_env import RayVecEnv
    from manip_rl.policies import config as cfgmod
    from manip_rl.policies.vec_env import ChunkedSubprocVecEnv

    load0 = os.getloadavg()
    ray.init(address="local", num_cpus=args.workers, include_dashboard=False,
             configure_logging=False)  # fmt: skip
    cfg = cfgmod.validate({**cfgmod.load_config(args.task, "ppo"), "n_envs": args.n_envs})
    fns = [cfgmod.env_factory(cfg, randomized=True, seed=i) for i in range(args.n_envs)]
    probe = fns[0]()
    spaces = (probe.observation_space, probe.action_space)
    probe.close()
    null = [NullFactory(spaces) for _ in range(args.n_envs)]
    makers = {
        "chunked": lambda f: ChunkedSubprocVecEnv(f, n_workers=args.workers),
        "ray": lambda f: RayVecEnv(f, n_workers=args.workers),
        "ray_calls": lambda f: RayVecEnv(f, n_workers=args.workers, transport="ray"),
    }
    rates: dict[str, list[float]] = {k + s: [] for k in makers for s in ("", "_null")}
    for _ in range(args.repeats):
        for name, make in makers.items():
            for suffix, f in (("", fns), ("_null", null)):
                v = make(f)
                try:
                    rates[name + suffix].append(_rate(v, args.steps))
                finally:
                    v.close()

    # The driver's cost per actor call: many do-nothing actors sharing the cores.
    call_rate = {}
    for transport in ("direct", "ray"):
        v = RayVecEnv(null[: args.call_actors], n_workers=args.call_actors, cpus_per_worker=0.01,
                      transport=transport)  # fmt: skip
        call_rate[transport] = _rate(v, args.steps)
        v.close()
    # What one actor's call carries: its actions in, its step return out.
    per_actor = args.n_envs // args.workers
    actions = np.zeros((per_actor, *spaces[1].shape), np.float32)
    env = fns[0]()
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step(np.zeros(spaces[1].shape, np.float32))
    env.close()
    step_return = (np.stack([obs] * per_actor), [r] * per_actor, [False] * per_actor,
                   [info] * per_actor, [{}] * per_actor)  # fmt: skip
    ray.shutdown()

    med = {k: statistics.median(x) for k, x in rates.items()}
    out = {
        "task": args.task,
        "n_envs": args.n_envs,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in load0],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "env_steps_per_s": {k: round(m * args.n_envs) for k, m in med.items()},
        "all_env_steps_per_s": {k: [round(x * args.n_envs) for x in xs] for k, xs in rates.items()},
        "ray_over_chunked": round(med["ray"] / med["chunked"], 3),
        "ray_calls_over_chunked": round(med["ray_calls"] / med["chunked"], 3),
        "sync_ms": {k: round(1e3 / med[k + "_null"], 3) for k in makers},
        "driver_ms_per_actor_call": round(1e3 / call_rate["direct"] / args.call_actors, 3),
        "driver_ms_per_actor_call_ray_calls": round(1e3 / call_rate["ray"] / args.call_actors, 3),
        "bytes_per_actor_step": {
            "actions": len(pickle.dumps(actions)),
            "returned": len(pickle.dumps(step_return)),
            "envs_per_actor": per_actor,
        },
    }
    out["scaling_estimate"] = scaling(out, med["ray"] * args.n_envs / args.workers)
    print(json.dumps(out, indent=1))


def scaling(
    m: dict,
    env_steps_per_actor_s: float,
    cores: int = 16,
    envs: int = 4,
    rtt_ms: float = 0.1,
    gbit_s: float = 10.0,
    policy_ms: float = 2.0,
) -> dict:
    """On paper: vec steps per second of one run over N nodes of ``cores`` actors with ``envs``
    envs each. A step costs the slowest actor's envs (measured rate here), the network round trip,
    the driver's serial cost per actor call (measured) times the actors, the step's bytes over the
    driver's link, and the policy's forward pass on the driver (``policy_ms``, batch of all envs)."""
    b = m["bytes_per_actor_step"]
    per_env_bytes = (b["actions"] + b["returned"]) / b["envs_per_actor"]
    call_ms = m["driver_ms_per_actor_call"]
    out = {"assumed": {"cores_per_node": cores, "envs_per_actor": envs, "rtt_ms": rtt_ms,
                       "driver_link_gbit_s": gbit_s, "policy_ms": policy_ms}}  # fmt: skip
    for nodes in (8, 32, 128):
        actors = nodes * cores
        env_ms = 1e3 * envs / env_steps_per_actor_s
        driver_ms = actors * call_ms
        wire_ms = actors * envs * per_env_bytes * 8 / (gbit_s * 1e9) * 1e3
        step_ms = env_ms + rtt_ms + driver_ms + wire_ms + policy_ms
        out[f"{nodes}_nodes"] = {
            "actors": actors,
            "env_steps_per_s": round(actors * envs / step_ms * 1e3),
            "ms": {
                "envs": round(env_ms, 2),
                "driver_calls": round(driver_ms, 1),
                "wire": round(wire_ms, 2),
                "rtt": rtt_ms,
                "policy": policy_ms,
            },  # fmt: skip
            "limit": max(
                ("envs", env_ms),
                ("driver calls", driver_ms),
                ("wire", wire_ms),
                ("policy", policy_ms),
                key=lambda kv: kv[1],
            )[0],  # fmt: skip
        }
    return out


if __name__ == "__main__":
    main()
