"""The ROS-free policy runner: it must build the environment's observation and joint targets
from robot readings, matching joints by name.

These tests use a small stand-in policy (a fixed linear map) with the attributes of
``manip_rl.export.LoadedPolicy``: the runner's contract with it is ``act`` and the spec fields;
the ROS tests (tests/test_ros_bridge.py) use real exported files.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import manip_rl  # noqa: F401  (registers the envs)
from manip_rl import policy_io
from manip_rl.policy_io import PANDA_FINGER_JOINT_NAMES, PANDA_JOINT_NAMES, SIM_JOINT_OFFSETS
from manip_rl.ros_bridge.runner import JointMap, JointStateError, PolicyRunner


class StandInPolicy:
    """A linear policy with LoadedPolicy's attributes."""

    def __init__(self, env) -> None:
        u = env.unwrapped
        self.task = u.task
        self.control_period = u.control_period
        self.action_spec = u.action_spec
        self.layout = u.layout
        self.metadata = {"control_period_s": u.control_period}
        rng = np.random.default_rng(0)
        self.w = rng.normal(0, 0.3, (self.action_spec.dim, self.layout.flat_dim))

    def act(self, obs: np.ndarray) -> np.ndarray:
        return np.tanh(self.w @ np.asarray(obs, dtype=np.float64)).astype(np.float32)


def _joint_state_from_env(env, shuffle: np.random.Generator):
    """A JointState-like (names, positions, velocities) of the simulated arm, robot convention,
    in a random joint order."""
    u = env.unwrapped
    d, ids = u.data, u.ids
    names = list(PANDA_JOINT_NAMES) + list(PANDA_FINGER_JOINT_NAMES)
    pos = list(d.qpos[ids.arm_qpos] + SIM_JOINT_OFFSETS) + list(d.qpos[ids.finger_qpos])
    vel = list(d.qvel[ids.arm_dof]) + list(d.qvel[ids.finger_dof])
    order = shuffle.permutation(len(names))
    return [names[i] for i in order], [pos[i] for i in order], [vel[i] for i in order]


@pytest.mark.parametrize("env_id", ["manip_rl/PandaReach-v0", "manip_rl/PandaPush-v0"])
@pytest.mark.parametrize("mode", ["joint_delta", "ee_delta"])
def test_runner_reproduces_the_env_observation_and_targets(env_id, mode):
    env = gym.make(env_id, action_mode=mode)
    policy = StandInPolicy(env)
    runner = PolicyRunner(policy)
    rng = np.random.default_rng(1)
    obs, _ = env.reset(seed=3)
    u = env.unwrapped
    for _ in range(5):
        names, pos, vel = _joint_state_from_env(env, rng)
        reading = runner.joint_map.read(names, pos, vel)
        o = u.object_position if u.ids.object_body >= 0 else None
        q = u.data.qpos[u.ids.object_qpos + 3 : u.ids.object_qpos + 7] if o is not None else None
        flat = runner.observation(reading, u.goal, o, q)
        np.testing.assert_allclose(flat, policy_io.flatten_observation(obs), atol=1e-5)
        step = runner.step(reading, u.goal, o, q)
        obs, *_ = env.step(step.action)
        # The env applied the same action from the same measured joints: same targets.
        ctrl = u.data.ctrl[u.ids.arm_actuators] + SIM_JOINT_OFFSETS
        np.testing.assert_allclose(step.targets, ctrl, atol=1e-9)
        if u.action_spec.gripper:
            assert step.gripper == pytest.approx(2 * u.data.ctrl[u.ids.finger_actuators][0])
        np.testing.assert_array_equal(runner.prev_action, step.action)
    runner.reset()
    assert not runner.prev_action.any()


def test_joint_map_matches_by_name_and_reports_missing_joints():
    jm = JointMap(PANDA_JOINT_NAMES, PANDA_FINGER_JOINT_NAMES)
    names = list(reversed(jm.required))
    pos = np.arange(9.0)[::-1]  # joint k has value k-1 whatever its index
    r = jm.read(names, pos, np.zeros(9))
    np.testing.assert_array_equal(r.position, np.arange(7.0))
    assert r.gripper_opening == pytest.approx(7.0 + 8.0)
    bad = ["joint_a1", *names[1:]]
    assert jm.missing(bad) == ["panda_finger_joint2"]
    with pytest.raises(JointStateError, match="panda_finger_joint2"):
        jm.read(bad, pos, np.zeros(9))
    with pytest.raises(JointStateError, match="velocities"):
        jm.read(names, pos, [])
    with pytest.raises(JointStateError, match="positions"):
        jm.read(names, pos[:3], np.zeros(9))


def test_nonfinite_reading_is_detected():
    jm = JointMap(PANDA_JOINT_NAMES)
    pos = np.zeros(7)
    pos[2] = np.nan
    assert not jm.read(PANDA_JOINT_NAMES, pos, np.zeros(7)).is_finite()
    assert jm.read(PANDA_JOINT_NAMES, np.zeros(7), np.zeros(7)).is_finite()


def test_wrong_action_size_from_a_policy_is_refused():
    env = gym.make("manip_rl/PandaReach-v0")
    policy = StandInPolicy(env)
    policy.act = lambda obs: np.zeros(3, dtype=np.float32)
    runner = PolicyRunner(policy)
    reading = runner.joint_map.read(PANDA_JOINT_NAMES, policy_io.PANDA_HOME, np.zeros(7))
    with pytest.raises(ValueError, match=r"\(7,\)"):
        runner.step(reading, np.array([0.5, 0.0, 0.3]))
