"""policy_bridge's control step in-process (``ControlCore.step``: the guards, the policy, the
safety filter, the workspace box), ROS-free, timed three ways in alternating blocks of one run:
back to back, one control period apart with the thread asleep between steps (what a 25 Hz
bridge does), and one period apart busy-waiting in between (the CPU never idles).

    python bench/control_step.py                      # shipped Push and Reach files, 25 Hz
    python bench/control_step.py --period 0.01        # 100 Hz

It separates the step's own cost from what the machine does to a step that comes after a pause:
on a shared VM the caches are cold again after a few ms whatever this process does, so the
spaced figures are the ones a real 25 Hz loop sees here. Prints JSON: p50/p90 in microseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from manip_rl.export.policy_file import load_policy
from manip_rl.robots import PANDA
from manip_rl.ros_bridge import bridge_params, dds, guard_params
from manip_rl.ros_bridge.control_core import ControlCore
from manip_rl.ros_bridge.operator_safety import OperatorGuard
from manip_rl.ros_bridge.perception import InputGuard
from manip_rl.ros_bridge.plausibility import StateCheck
from manip_rl.ros_bridge.runner import PolicyRunner
from manip_rl.ros_bridge.safety import SafetyFilter

NAMES = [*PANDA.joint_names, *PANDA.finger_joint_names]
BASE = "panda_link0"


def make_core(policy) -> ControlCore:
    """The bridge's control core with its default parameters (launch/config defaults)."""
    p = dict(guard_params.PARAMETERS, **bridge_params.PARAMETERS)
    get = p.__getitem__
    runner = PolicyRunner(policy)
    safety = SafetyFilter(bridge_params.safety_config(get, PANDA, policy.action_spec, 0.04))
    check = StateCheck(guard_params.plausibility_config(get, PANDA), runner.joint_map)
    goal_cfg, obj_cfg = guard_params.perception_configs(get, PANDA)
    op = OperatorGuard(guard_params.operator_config(get, PANDA))
    return ControlCore(
        runner, safety, check, InputGuard("goal", goal_cfg), InputGuard("object pose", obj_cfg), op
    )


class Loop:
    def __init__(self, policy, seed: int) -> None:
        self.core, self.t = make_core(policy), 1000.0
        self.rng = np.random.default_rng(seed)
        self.q = np.concatenate([PANDA.home, [0.02, 0.02]])
        self._feed()
        self.core.enable(self.t)

    def _feed(self) -> None:
        q = self.q + np.concatenate([self.rng.uniform(-0.01, 0.01, 7), [0, 0]])
        core, t = self.core, self.t
        core.joint_state(NAMES, q, np.zeros(9), t, t, active=True)
        core.offer(core.goal, t, BASE, (0.6, 0.1, 0.02), None, t)
        core.offer(core.obj, t, BASE, (0.5, 0.0, 0.02), (1.0, 0, 0, 0), t)

    def block(self, n: int, period: float, mode: str) -> list[float]:
        out = []
        for _ in range(n):
            self.t += period
            self._feed()
            t0 = time.perf_counter()
            self.core.step(self.t + 0.001)
            out.append(time.perf_counter() - t0)
            if mode == "sleep":
                time.sleep(period)
            elif mode == "busy":
                end = time.perf_counter() + period
                while time.perf_counter() < end:
                    pass
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--period", type=float, default=0.04, help="s between spaced steps (0.04)")
    p.add_argument("--blocks", type=int, default=6, help="blocks of each mode")
    p.add_argument("--steps", type=int, default=50, help="steps a block")
    p.add_argument("--policies", nargs="+", default=["panda_push.pt", "panda_reach.pt"],
                   help="files under the shipped pretrained directory, or paths")  # fmt: skip
    args = p.parse_args()
    modes = ("back_to_back", "sleep", "busy")
    out = {"period_s": args.period, "load_before": os.getloadavg()}
    for name in args.policies:
        path = name if os.path.exists(name) else str(dds.PRETRAINED_DIR / name)
        loop = Loop(load_policy(path), seed=0)
        loop.block(20, 0.0, "back_to_back")  # warm-up
        samples: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.blocks):
            for mode in modes:
                samples[mode] += loop.block(args.steps, args.period, mode)
        out[os.path.basename(path)] = {
            m: {
                "p50_us": round(float(np.percentile(s, 50)) * 1e6),
                "p90_us": round(float(np.percentile(s, 90)) * 1e6),
            }  # fmt: skip
            for m, s in samples.items()
        }
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
