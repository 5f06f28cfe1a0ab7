"""Environment throughput against gymnasium-robotics FetchPush-v4, measured in one run.

Prints, for each scene (the three manip_rl tasks and FetchPush-v4): the raw ``mj_step`` rate (replaying the controls the env applied, so the
physics sees the same motions and contacts), env steps/s with randomization off and on, in one
process and in two, and FetchPush-v4 measured the same way. Both simulate 40 ms per env step
(FetchPush: 20 x 2 ms; manip_rl: 15 x 2.67 ms), so steps/s compare at equal simulated time.

Rates are medians of interleaved repeats; each target ratio is the median of the ratios within
each repeat, whose two rates were measured back to back (the machine is shared and noisy).

FetchPush-v4 runs in an environment of its own, ``bench/.peer-venv`` (gymnasium-robotics 1.4.2's
Fetch envs need mujoco < 3.12; made on the first run, see bench/peer.py): each FetchPush
measurement is this script run there with ``--peer``, between the manip_rl ones as before.

    python bench/env_throughput.py              # about 3 minutes
    python bench/env_throughput.py --components # also: cost of each randomized quantity
    python bench/env_throughput.py --paired 60  # also: both ratios from alternating short chunks
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import warnings

import gymnasium as gym
import mujoco
import numpy as np

TARGETS = {
    "vs_fetch": 3.0,  # our env (randomization on, one process) / FetchPush-v4
    "overhead": 0.85,  # our env (randomization off) / (raw mj_step rate / substeps)
    "randomization_cost": 0.05,  # 1 - on / off
    "two_process": 1.8,  # two processes / one
}


def make(env_id: str, randomization: object | None) -> gym.Env:
    if env_id.startswith("manip_rl/"):
        import manip_rl  # noqa: F401

        return gym.make(env_id, randomization=randomization)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import gymnasium_robotics

        gym.register_envs(gymnasium_robotics)
    return gym.make(env_id)


def _timed_steps(env: gym.Env, actions: np.ndarray, seconds: float) -> float:
    """Env steps per second of ``env.step`` cycling through ``actions``, auto-reset, for at least
    ``seconds`` (checked every 256 steps); closes the env."""
    n, start = 0, time.perf_counter()
    while True:
        for i in range(256):
            _, _, terminated, truncated, _ = env.step(actions[(n + i) % len(actions)])
            if terminated or truncated:
                env.reset()
        n += 256
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            env.close()
            return n / elapsed


def _recorded_episode(env: gym.Env, seed: int) -> tuple[tuple, list]:
    """One episode of random actions from reset(seed): the initial (qpos, qvel) and, per step,
    the (ctrl, mocap_pos, mocap_quat) the env applied, for a raw replay of its physics."""
    data = env.unwrapped.data
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    initial = (data.qpos.copy(), data.qvel.copy())
    controls = []
    for _ in range(env.spec.max_episode_steps):
        env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32))
        controls.append((data.ctrl.copy(), data.mocap_pos.copy(), data.mocap_quat.copy()))
    return initial, controls


def _replay(model: mujoco.MjModel, replay: mujoco.MjData, initial: tuple, controls: list,
            substeps: int) -> None:  # fmt: skip
    """Step ``replay`` from ``initial`` through ``controls`` (see _recorded_episode)."""
    replay.qpos[:], replay.qvel[:] = initial
    mujoco.mj_forward(model, replay)
    for ctrl, mocap_pos, mocap_quat in controls:
        replay.ctrl[:] = ctrl
        if model.nmocap:  # Fetch moves its gripper by mocap
            replay.mocap_pos[:], replay.mocap_quat[:] = mocap_pos, mocap_quat
        mujoco.mj_step(model, replay, nstep=substeps)


def env_rate(env_id: str, randomization: object | None, seconds: float, seed: int = 0) -> float:
    """Env steps per second through gym.make (wrappers included), random actions, auto-reset."""
    env = make(env_id, randomization)
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (4096, *env.action_space.shape)).astype(np.float32)
    env.reset(seed=seed)
    for a in actions[:50]:  # warm-up
        env.step(a)
    return _timed_steps(env, actions, seconds)


def raw_rate(env_id: str, seconds: float, seed: int = 0) -> tuple[float, int]:
    """Raw mj_step rate of the env's own model replaying the controls the env applied.

    Returns (env steps/s as raw physics allows, substeps per env step)."""
    env = make(env_id, None)
    model, substeps = env.unwrapped.model, _substeps(env.unwrapped)
    initial, controls = _recorded_episode(env, seed)
    replay = mujoco.MjData(model)
    n, start = 0, time.perf_counter()
    while True:
        _replay(model, replay, initial, controls, substeps)
        n += len(controls)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            env.close()
            return n / elapsed, substeps


def floor_rate(env_id: str, seconds: float, seed: int = 0) -> float:
    """Env steps/s through gym.make (same wrappers, same resets) of a step that does only what
    any env step must: write the controls (the raw replay's), step the physics, refresh the
    kinematics, and return (the reset's observation). The most a Python env step reaches here;
    the gap between it and the env is the env's own per-step work."""
    env = make(env_id, None)
    base = env.unwrapped
    model, data, substeps = base.model, base.data, _substeps(base)
    _, controls = _recorded_episode(env, seed)
    obs, _ = env.reset(seed=seed)
    k = [0]

    def physics_only(action):
        data.ctrl[:] = controls[k[0] % len(controls)][0]
        k[0] += 1
        mujoco.mj_step(model, data, nstep=substeps)
        mujoco.mj_kinematics(model, data)
        return obs, 0.0, False, False, {}

    base.step = physics_only  # the wrappers call it through the instance
    return _timed_steps(env, np.zeros((1, *env.action_space.shape), np.float32), seconds)


def paired_chunks(env_id: str, chunks: int, steps: int = 100, seed: int = 0) -> dict:
    """The overhead ratio and the randomization cost from alternating short chunks in one
    process: ``steps`` env steps randomization off, the same number randomization on, and a raw
    replay of one episode's controls, in turn, ``chunks`` times. Each ratio is the median of the
    per-chunk ratios, so the machine's drift (seconds to minutes on a shared host) hits both
    sides of every ratio alike."""
    off, on = make(env_id, None), make(env_id, "default")
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (4096, *off.action_space.shape)).astype(np.float32)
    model, substeps = off.unwrapped.model, _substeps(off.unwrapped)
    initial, controls = _recorded_episode(off, seed)
    controls = controls[:steps]
    replay = mujoco.MjData(model)
    off.reset(seed=seed)
    on.reset(seed=seed)

    def run(env: gym.Env, start: int) -> float:
        t = time.perf_counter()
        for i in range(steps):
            _, _, terminated, truncated, _ = env.step(actions[(start + i) % len(actions)])
            if terminated or truncated:
                env.reset()
        return time.perf_counter() - t

    overhead, cost = [], []
    for c in range(chunks + 3):  # the first 3 warm up
        t_off, t_on = run(off, c * steps), run(on, c * steps)
        t = time.perf_counter()
        _replay(model, replay, initial, controls, substeps)
        t_raw = (time.perf_counter() - t) * steps / len(controls)
        if c >= 3:
            overhead.append(t_raw / t_off)
            cost.append(1 - t_off / t_on)
    off.close()
    on.close()
    return {"overhead": statistics.median(overhead), "randomization_cost": statistics.median(cost)}


def _substeps(base: gym.Env) -> int:
    if hasattr(base, "n_substeps"):  # gymnasium-robotics
        return int(base.n_substeps)
    from manip_rl.envs import scene

    return scene.SUBSTEPS


def _worker(env_id, randomization, seconds, seed, barrier, out):
    barrier.wait()
    out.put(env_rate(env_id, randomization, seconds, seed))


def two_process_rate(env_id: str, randomization: object | None, seconds: float) -> float:
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(env_id, randomization, seconds, s, barrier, out))
        for s in (1, 2)
    ]
    for p in procs:
        p.start()
    rates = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


PEER_KINDS = ("env", "raw", "two", "versions")


def peer_main(kind: str, env_id: str, seconds: float, seed: int) -> None:
    """One FetchPush measurement, run inside the peer environment; prints it as JSON."""
    if kind == "env":
        result: object = env_rate(env_id, None, seconds, seed)
    elif kind == "raw":
        result = raw_rate(env_id, seconds, seed)
    elif kind == "two":
        result = two_process_rate(env_id, None, seconds)
    else:
        import gymnasium_robotics

        result = {
            "mujoco": mujoco.__version__,
            "gymnasium": gym.__version__,
            "gymnasium_robotics": gymnasium_robotics.__version__,
        }
    print(json.dumps(result))


class Peer:
    """FetchPush-v4 measured in the peer environment, with the calls of this script's own."""

    def __init__(self, env_id: str) -> None:
        from peer import peer_python  # bench/peer.py, beside this script

        peer_python()  # made now, so its first-run setup is not inside a measurement
        self.env_id = env_id

    def _call(self, kind: str, seconds: float = 0.0, seed: int = 0) -> object:
        from peer import peer_measure

        return peer_measure(__file__, kind, self.env_id, str(seconds), str(seed))

    def env_rate(self, seconds: float, seed: int = 0) -> float:
        return float(self._call("env", seconds, seed))

    def raw_rate(self, seconds: float, seed: int = 0) -> tuple[float, int]:
        rate, substeps = self._call("raw", seconds, seed)
        return float(rate), int(substeps)

    def two_process_rate(self, seconds: float) -> float:
        return float(self._call("two", seconds))

    def versions(self) -> dict:
        return self._call("versions")


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--peer" and sys.argv[2] in PEER_KINDS:
        peer_main(sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats; median reported")
    p.add_argument(
        "--task", default="PandaPush", choices=("PandaReach", "PandaPush", "PandaPickPlace")
    )
    p.add_argument("--components", action="store_true", help="cost of each randomized quantity")
    p.add_argument("--paired", type=int, default=0, metavar="CHUNKS",
                   help="also: the overhead ratio and randomization cost from CHUNKS alternating "
                        "100-step chunks in one process (robust to the machine's drift)")  # fmt: skip
    args = p.parse_args()
    ours, fetch = f"manip_rl/{args.task}-v0", "FetchPush-v4"
    print(f"cpu cores: {os.cpu_count()}  mujoco {mujoco.__version__}  numpy {np.__version__}")
    peer = Peer(fetch)
    v = peer.versions()
    print(
        f"{fetch} (bench/.peer-venv): mujoco {v['mujoco']}  gymnasium {v['gymnasium']}  "
        f"gymnasium-robotics {v['gymnasium_robotics']}"
    )

    keys = ("fetch", "off", "on", "raw_ours", "floor", "raw_fetch", "two_on", "two_fetch")
    rows: dict[str, list[float]] = {k: [] for k in keys}
    for r in range(args.repeats):  # interleaved, so drifting machine load hits all alike
        rows["fetch"].append(peer.env_rate(args.seconds, r))
        rows["off"].append(env_rate(ours, None, args.seconds, r))
        rows["on"].append(env_rate(ours, "default", args.seconds, r))
        rows["raw_ours"].append(raw_rate(ours, args.seconds, r)[0])
        rows["floor"].append(floor_rate(ours, args.seconds, r))
        rows["raw_fetch"].append(peer.raw_rate(args.seconds, r)[0])
        rows["two_on"].append(two_process_rate(ours, "default", args.seconds))
        rows["two_fetch"].append(peer.two_process_rate(args.seconds))
    med = {k: statistics.median(v) for k, v in rows.items()}
    two_on, two_fetch = med["two_on"], med["two_fetch"]
    _, sub_ours = raw_rate(ours, 0.1)
    _, sub_fetch = peer.raw_rate(0.1)

    print(f"\n{'':44s}{'env steps/s':>12s}  notes")
    print(
        f"{fetch + ' raw mj_step / ' + str(sub_fetch):44s}{med['raw_fetch']:12.0f}  "
        f"({med['raw_fetch'] * sub_fetch:,.0f} mj_step/s)"
    )
    print(f"{fetch + ' env, 1 process':44s}{med['fetch']:12.0f}")
    print(f"{fetch + ' env, 2 processes':44s}{two_fetch:12.0f}")
    print(
        f"{ours + ' raw mj_step / ' + str(sub_ours):44s}{med['raw_ours']:12.0f}  "
        f"({med['raw_ours'] * sub_ours:,.0f} mj_step/s)"
    )
    print(f"{ours + ' physics-only step (the floor)':44s}{med['floor']:12.0f}")
    print(f"{ours + ' env, randomization off':44s}{med['off']:12.0f}")
    print(f"{ours + ' env, randomization on':44s}{med['on']:12.0f}")
    print(f"{ours + ' env, randomization on, 2 processes':44s}{two_on:12.0f}")

    print("\nraw mj_step rate of each manip_rl scene (replaying its env's controls):")
    for task in ("PandaReach", "PandaPush", "PandaPickPlace"):
        rate, sub = raw_rate(f"manip_rl/{task}-v0", args.seconds)
        print(f"  {task:16s} {rate * sub:10,.0f} mj_step/s  = {rate:7,.0f} env steps/s bound")

    # Each ratio is the median of the ratios within each repeat: the two rates it compares were
    # measured back to back, so load that drifts between repeats cancels out.
    def paired(num: str, den: str) -> float:
        return statistics.median(a / b for a, b in zip(rows[num], rows[den], strict=True))

    ratios = {
        "vs_fetch": paired("on", "fetch"),
        "overhead": paired("off", "raw_ours"),
        "randomization_cost": 1 - paired("on", "off"),
        "two_process": paired("two_on", "on"),
    }
    print(f"\ncontrol period: 40 ms for both ({fetch}: {sub_fetch} substeps, {ours}: {sub_ours})")
    labels = {
        "vs_fetch": f"{ours} (randomized) / {fetch}",
        "overhead": "env / raw physics bound (Python overhead)",
        "randomization_cost": "randomization cost",
        "two_process": "2 processes / 1 process",
    }
    floor = paired("floor", "raw_ours")
    print(f"  {'physics-only step / raw physics bound (no target)':46s} {floor:7.2f}x")
    for key, value in ratios.items():
        target = TARGETS[key]
        ok = value <= target if key == "randomization_cost" else value >= target
        shown = f"{value:.1%}" if key == "randomization_cost" else f"{value:.2f}x"
        bound = f"<= {target:.0%}" if key == "randomization_cost" else f">= {target}x"
        print(f"  {labels[key]:46s} {shown:>8s}   target {bound:8s} {'PASS' if ok else 'FAIL'}")

    if args.paired:
        pc = paired_chunks(ours, args.paired)
        print(f"\nalternating 100-step chunks, {args.paired} of each (median of per-chunk ratios):")
        print(f"  {'env / raw physics bound':46s} {pc['overhead']:7.2f}x   target >= "
              f"{TARGETS['overhead']}x")  # fmt: skip
        print(f"  {'randomization cost':46s} {pc['randomization_cost']:7.1%}   target <= "
              f"{TARGETS['randomization_cost']:.0%}")  # fmt: skip

    if args.components:
        import yaml

        from manip_rl.envs.randomization import CONFIG_DIR

        full = yaml.safe_load(open(os.path.join(CONFIG_DIR, "push.yaml")))
        extra = {"frictionloss": {"dist": "uniform", "op": "add", "range": [0.0, 0.3]}}
        print("\ncost of each randomized quantity alone (vs randomization off, same run):")
        for key, spec in {**full["physics"], **extra}.items():
            off = env_rate(ours, None, args.seconds)
            on = env_rate(ours, {"physics": {key: spec}}, args.seconds)
            print(f"  {key:16s} {1 - on / off:+6.1%}")


if __name__ == "__main__":
    main()
