"""The policy runner: joint readings and task inputs in, joint targets out. ROS-free.

It builds the observation exactly as the environments do (``policy_io.Sensors`` ->
``build_observation`` -> ``flatten_observation``; TCP position from forward kinematics of the
measured joints; gripper opening = sum of the finger joints; previous action = this runner's last
policy output) and maps the action with ``policy_io.action_to_joint_targets`` (the TCP Jacobian for
``ee_delta`` policies). Joints are matched by name, never by index (:class:`JointMap`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from manip_rl import policy_io
from manip_rl.policy_io import PANDA_FINGER_JOINT_NAMES, ActionSpec, ObsLayout, Sensors
from manip_rl.robots import RobotDescription
from manip_rl.robots.kinematics import Kinematics


class Policy(Protocol):
    """What the runner needs of ``manip_rl.export.LoadedPolicy``."""

    task: str
    control_period: float
    action_spec: ActionSpec
    layout: ObsLayout
    metadata: dict

    def act(self, obs: np.ndarray) -> np.ndarray: ...

    # A stateful policy file (LSTM, observation history) also has reset() (an episode starts)
    # and peek(obs) (an action that does not move the state on); the runner calls them when
    # the policy has them.


class JointStateError(ValueError):
    """A joint state that cannot be used (missing joints, wrong sizes)."""


class DuplicateJointNames(JointStateError):
    """A joint state that names a joint more than once: no reading of it can be trusted."""


@dataclasses.dataclass(frozen=True)
class JointReading:
    """One joint state, reordered into the policy's joint order (robot convention)."""

    position: np.ndarray  # (7,) rad
    velocity: np.ndarray  # (7,) rad/s
    gripper_opening: float | None  # m, sum of the finger joints; None without fingers

    def is_finite(self) -> bool:
        ok = np.isfinite(self.position).all() and np.isfinite(self.velocity).all()
        return bool(ok and (self.gripper_opening is None or np.isfinite(self.gripper_opening)))


class JointMap:
    """Picks the policy's joints out of a JointState by name. The index table is cached per
    name list, so a publisher may order its joints any way (and change the order)."""

    def __init__(self, arm_joints: Sequence[str], finger_joints: Sequence[str] = ()) -> None:
        self.arm_joints = tuple(arm_joints)
        self.finger_joints = tuple(finger_joints)
        self._cache: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}

    @property
    def required(self) -> tuple[str, ...]:
        return self.arm_joints + self.finger_joints

    def missing(self, names: Sequence[str]) -> list[str]:
        """The policy's joints that ``names`` lacks (empty when it covers them all)."""
        present = set(names)
        return [n for n in self.required if n not in present]

    def _indices(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        key = tuple(names)
        idx = self._cache.get(key)
        if idx is None:
            if len(set(key)) != len(key):
                seen: set[str] = set()
                twice = sorted({n for n in key if n in seen or seen.add(n)})
                raise DuplicateJointNames(
                    f"the joint state names {twice} more than once (it has {list(key)}); which "
                    "value is the joint's is unknown, so none is used. Fix the publisher"
                )
            missing = self.missing(key)
            if missing:
                raise JointStateError(
                    f"the joint state lacks the policy's joints {missing} (it has {list(key)}); "
                    "remap the joint names or check the robot's joint_state_broadcaster"
                )
            where = {n: i for i, n in enumerate(key)}
            idx = (
                np.array([where[n] for n in self.arm_joints], dtype=np.intp),
                np.array([where[n] for n in self.finger_joints], dtype=np.intp),
            )
            if len(self._cache) > 16:
                self._cache.clear()
            self._cache[key] = idx
        return idx

    def read(
        self, names: Sequence[str], position: Sequence[float], velocity: Sequence[float]
    ) -> JointReading:
        """Reorder a JointState's position and velocity arrays into the policy's joints."""
        arm, fingers = self._indices(names)
        pos = np.asarray(position, dtype=np.float64)
        if pos.shape != (len(names),):
            raise JointStateError(
                f"the joint state has {len(names)} names but {pos.shape[0]} positions"
            )
        vel = np.asarray(velocity, dtype=np.float64)
        if vel.shape != (len(names),):
            raise JointStateError(
                f"the joint state has {len(names)} names but {vel.shape[0]} velocities; the "
                "policy observes joint velocities, so the arm must publish them"
            )
        gripper = float(pos[fingers].sum()) if len(fingers) else None
        return JointReading(pos[arm], vel[arm], gripper)


@dataclasses.dataclass(frozen=True)
class Step:
    """One policy step: the action in [-1, 1], the joint targets and gripper opening it maps to,
    and the seconds spent in the policy's forward pass."""

    action: np.ndarray
    targets: np.ndarray
    gripper: float | None
    inference_s: float


class PolicyRunner:
    """Runs a loaded policy on robot readings; keeps the previous action between steps, and a
    stateful policy's memory, which starts afresh at :meth:`reset` (the bridge's enable) and
    whenever the goal jumps by more than :attr:`new_goal_m` (a new episode's goal)."""

    new_goal_m: float = 0.01  # a goal move larger than this (m) starts a new episode

    def __init__(
        self, policy: Policy, kinematics: Any = None, robot: RobotDescription | None = None
    ) -> None:
        self.policy = policy
        self.spec: ActionSpec = policy.action_spec
        self.layout: ObsLayout = policy.layout
        names = {f.name for f in self.layout.observation}
        self.needs_object = "object_pos" in names or self.layout.achieved_goal.name == "object_pos"
        if kinematics is None:
            kinematics = Kinematics()
        self.kinematics = kinematics
        # The robot's names, matched to the policy's joints by role (manip_rl.robots.roles): a
        # Panda-trained policy reads an FR3's fr3_joint1..7 as its panda_joint1..7.
        arm = self.spec.joint_names if robot is None else robot.joint_names
        fingers = PANDA_FINGER_JOINT_NAMES if robot is None else robot.finger_joint_names
        self.joint_map = JointMap(arm, fingers if self.spec.gripper else ())
        self.prev_action = np.zeros(self.spec.dim)
        self._goal: np.ndarray | None = None  # the goal of the episode under way

    def reset(self) -> None:
        """Start a new episode: the previous action is zero and the policy's memory (if it has
        any) is reset, as after an env reset."""
        self.prev_action = np.zeros(self.spec.dim)
        self.reset_memory()

    def reset_memory(self) -> None:
        """Reset a stateful policy's memory (LSTM state, observation history) to an episode's
        start; nothing for a memoryless policy."""
        reset = getattr(self.policy, "reset", None)
        if reset is not None:
            reset()
        self._goal = None

    def warm(self, obs: np.ndarray) -> None:
        """Call the policy to keep its code paths warm, without moving a stateful policy's
        memory on (its ``peek``)."""
        peek = getattr(self.policy, "peek", None)
        (peek or self.policy.act)(obs)

    def dry_run(self) -> None:
        """Build one observation at the home pose (the policy, kinematics and layout agree, or
        this raises) and call the policy a few times (TorchScript's profiling executor optimizes
        on the first calls: pay for them here, not in the control loop)."""
        required = self.joint_map.required
        home = np.concatenate([self.spec.home, [0.02, 0.02]])[: len(required)]
        self.observation(
            self.joint_map.read(required, home, np.zeros(len(required))),
            np.zeros(3),
            np.zeros(3) if self.needs_object else None,
            np.array([1.0, 0, 0, 0]) if self.needs_object else None,
        )
        for _ in range(3):
            self.warm(np.zeros(self.policy.obs_dim, dtype=np.float32))

    def observation(
        self,
        reading: JointReading,
        goal: np.ndarray,
        object_pos: np.ndarray | None = None,
        object_quat: np.ndarray | None = None,
    ) -> np.ndarray:
        """The flat policy input for these readings (the environments' builder)."""
        if self.needs_object and (object_pos is None or object_quat is None):
            raise ValueError(f"the {self.layout.task} policy needs the object pose, none given")
        sensors = Sensors(
            joint_pos=reading.position,
            joint_vel=reading.velocity,
            ee_pos=self.kinematics.ee_pos(reading.position),
            gripper_opening=reading.gripper_opening or 0.0,
            object_pos=None if object_pos is None else np.asarray(object_pos, dtype=np.float64),
            object_quat=None if object_quat is None else np.asarray(object_quat, dtype=np.float64),
        )
        obs = policy_io.build_observation(self.layout, sensors, goal, self.prev_action)
        return policy_io.flatten_observation(obs)

    def step(
        self,
        reading: JointReading,
        goal: np.ndarray,
        object_pos: np.ndarray | None = None,
        object_quat: np.ndarray | None = None,
    ) -> Step:
        """Observe, act, map the action to joint targets, remember the action. A goal that
        moved by more than :attr:`new_goal_m` since the last step starts the policy's memory
        afresh (a new episode)."""
        g = np.asarray(goal, dtype=np.float64)
        if self._goal is not None and float(np.linalg.norm(g - self._goal)) > self.new_goal_m:
            self.reset_memory()
        self._goal = g.copy()
        flat = self.observation(reading, goal, object_pos, object_quat)
        t0 = time.perf_counter()
        action = np.asarray(self.policy.act(flat), dtype=np.float64).reshape(-1)
        inference_s = time.perf_counter() - t0
        if action.shape != (self.spec.dim,):
            raise ValueError(
                f"the policy returned an action of shape {action.shape}; its action spec says "
                f"({self.spec.dim},)"
            )
        action = policy_io.sanitize_action(action)
        jac = ee = None
        if self.spec.mode == policy_io.EE_DELTA:
            jac = self.kinematics.ee_jacobian(reading.position)
            ee = self.kinematics.ee_pos(reading.position)
        targets, gripper = policy_io.action_to_joint_targets(
            self.spec, action, reading.position, jac, ee
        )
        self.prev_action = action
        return Step(action, targets, gripper, inference_s)
