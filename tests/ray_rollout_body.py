"""Body of tests/test_ray_rollout.py, run inside a loopback-only network namespace: a Ray
cluster of two nodes (ray.cluster_utils.Cluster, real raylets), RayVecEnv against DummyVecEnv,
a training run on Ray rollout workers, and an actor killed (SIGKILL) mid-training."""

from __future__ import annotations

import os
import signal
import sys

import numpy as np

from manip_rl.distributed.netns import require_loopback_only

require_loopback_only("tests/ray_rollout_body.py")

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from stable_baselines3.common.callbacks import BaseCallback  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ray_netns import emit, tcp_peers  # noqa: E402
from training_helpers import tiny_config  # noqa: E402

from manip_rl.distributed.ray_vec_env import RayVecEnv  # noqa: E402
from manip_rl.policies import config as cfgmod  # noqa: E402
from manip_rl.policies import rundir  # noqa: E402
from manip_rl.policies import train as trainmod  # noqa: E402

out_dir = sys.argv[1]
result: dict = {}
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()
os.environ["RAY_ADDRESS"] = cluster.address  # RayVecEnv joins the cluster through it
result["nodes"] = 2

cfg = tiny_config("ppo", steps=600, n_envs=4, vec_env="ray", n_workers=2)
fns = [cfgmod.env_factory(cfg, randomized=True, seed=i) for i in range(4)]

# 1. Same transitions as DummyVecEnv (seeds, auto-reset, terminal observations), and the two
# actors on two different nodes.
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402


def compare_with_dummy(ray_env: RayVecEnv) -> dict:
    ref = DummyVecEnv(fns)
    for v in (ray_env, ref):
        v.seed(7)
    rng = np.random.default_rng(0)
    o1, o2 = ray_env.reset(), ref.reset()
    same, dones_seen, terminal_same = bool(np.array_equal(o1, o2)), 0, True
    for _ in range(60):  # PandaReach's episodes are 50 steps: crosses an automatic reset
        a = rng.uniform(-1, 1, (4, *ray_env.action_space.shape)).astype(np.float32)
        s1, s2 = ray_env.step(a), ref.step(a)
        same &= bool(np.array_equal(s1[0], s2[0]) and np.array_equal(s1[1], s2[1]))
        same &= bool(np.array_equal(s1[2], s2[2]))
        for i in np.flatnonzero(s1[2]):
            dones_seen += 1
            terminal_same &= bool(
                np.array_equal(s1[3][i]["terminal_observation"], s2[3][i]["terminal_observation"])
            )
    ref.close()
    return {"same_as_dummy": same, "dones_seen": dones_seen, "terminal_same": terminal_same}


# Each step as a Ray actor call (transport="ray"), then the default direct channel.
calls_env = RayVecEnv(fns, n_workers=2, transport="ray")
result["ray_calls"] = compare_with_dummy(calls_env)
calls_env.close()
ray_env = RayVecEnv(fns, n_workers=2)
result["transport"] = ray_env.transport
result["nodes_used"] = len({p["node_id"] for p in ray_env.placement()})
result.update(compare_with_dummy(ray_env))
result["env_method"] = ray_env.env_method("get_wrapper_attr", "spec", indices=[3])[0].id

# The direct channel admits only the driver's key: a second actor's listener turns a client
# with another key away, and still serves the right one afterwards.
from multiprocessing.connection import AuthenticationError, Client  # noqa: E402

from manip_rl.distributed import ray_vec_env as rvm  # noqa: E402

probe = ray.remote(rvm.EnvGroup).options(num_cpus=0).remote(fns[:1])  # the CPUs are taken
key = b"k" * 32
address = tuple(ray.get(probe.open_channel.remote(key)))
try:
    Client(address, authkey=b"x" * 32)
    result["wrong_key"] = "accepted"
except AuthenticationError:
    result["wrong_key"] = "refused"
good = Client(address, authkey=key)
good.send(("reset", [(3, None)]))
ok, (probe_obs, _) = good.recv()
result["right_key_after_wrong"] = (
    bool(ok) and probe_obs.shape[1:] == ray_env.observation_space.shape
)
good.close()
ray.kill(probe)

# An env's error crosses the channel as a RuntimeError naming the envs; the channel goes on.
try:
    ray_env.step(np.zeros((4, 99), np.float32))  # the wrong action shape
    result["env_error"] = None
except RuntimeError as e:
    result["env_error"] = str(e)
ray_env.reset()
result["steps_after_error"] = ray_env.step(np.zeros((4, *ray_env.action_space.shape), np.float32))[
    0
].shape[0]

# 2. PPO learning on the actors; one actor's process SIGKILLed mid-training.
from stable_baselines3 import PPO  # noqa: E402


class KillOne(BaseCallback):
    def __init__(self, venv: RayVecEnv, at: int) -> None:
        super().__init__()
        self.venv, self.at, self.killed_pid, self.replaced_infos = venv, at, None, 0

    def _on_step(self) -> bool:
        self.replaced_infos += sum(bool(i.get("ray_actor_replaced")) for i in self.locals["infos"])
        if self.killed_pid is None and self.num_timesteps >= self.at:
            self.killed_pid = self.venv.placement()[1]["pid"]
            os.kill(self.killed_pid, signal.SIGKILL)
        return True


kill = KillOne(ray_env, at=200)
model = PPO("MlpPolicy", ray_env, n_steps=50, batch_size=50, n_epochs=2, seed=0,
            policy_kwargs={"net_arch": [16, 16]}, device="cpu")  # fmt: skip
model.learn(600, callback=kill)
result["ppo_timesteps"] = int(model.num_timesteps)
result["replacements"] = ray_env.replacements
result["replaced_infos"] = kill.replaced_infos
after = ray_env.placement()
result["new_pid_differs"] = after[1]["pid"] != kill.killed_pid
result["tcp_addresses"] = sorted(set(tcp_peers()))  # taken while the cluster runs
ray_env.close()

# 3. A manip_rl run with vec_env: ray, end to end: run directory, checkpoints, final model.
path = os.path.join(out_dir, "run")
os.makedirs(path)
rundir.write_config(path, cfg)
trainmod.train(path, cfg, progress=False)
run = rundir.load_run(path)
result["run_final_steps"] = run.model_meta("final")["timesteps"]
result["run_checkpoint"] = run.latest_checkpoint()["timesteps"]
result["run_evals"] = len(run.evaluations())

ray.shutdown()
cluster.shutdown()
emit(result)
