"""The shared Panda tabletop environment: physics stepping, sensing with noise and latency, action
mapping through :mod:`manip_rl.policy_io`, domain randomization and rendering. Tasks subclass it,
set ``task_spec`` (their :class:`~manip_rl.envs.spec.TaskSpec`) and write ``_reset_task`` (object
and goal sampling), ``_achieved_true`` and any goal-independent reward terms."""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from manip_rl import policy_io
from manip_rl.envs import scene
from manip_rl.envs.randomization import DomainRandomizer, Sample, load_config
from manip_rl.envs.spec import TaskSpec
from manip_rl.policy_io import SIM_JOINT_OFFSETS

REWARD_TYPES = ("sparse", "dense")

# One flat vector holds a sensor reading (policy_io.SENSOR_FIELDS), so noise and bias are one
# vector operation per step and the observation one gather.
_SENSOR_SLICES = policy_io.SENSOR_SLICES
_N_SENSE = policy_io.SENSOR_DIM
_JOINT_POS = _SENSOR_SLICES["joint_pos"]
_EE_POS = _SENSOR_SLICES["ee_pos"]
_GRIPPER = _SENSOR_SLICES["gripper_opening"].start
# 0-d arrays as numpy operands: a Python float costs a conversion in every call.
_MINUS_ONE, _ONE = np.array(-1.0), np.array(1.0)
_ZERO = np.zeros(1)  # the gathers' source of a zero (object slots of a task without an object)


def _info_values(info: Any, key: str) -> np.ndarray:
    """``info[key]`` from one info dict, or stacked from a sequence of them (HER's batches)."""
    if isinstance(info, Mapping):
        return info[key]
    return np.array([i[key] for i in info], dtype=np.float32)


def _sensor_gather(model: mujoco.MjModel, ids: scene.SceneIds) -> tuple[np.ndarray, np.ndarray]:
    """Two index vectors into ``[qpos | qvel | TCP site position | 0 | sim joint offsets]``
    whose gathers sum to the sensor vector (policy_io.SENSOR_FIELDS order, robot convention):
    the first takes the state (the first finger for the gripper opening), the second the
    joint offsets and the second finger, and the 0 everywhere else."""
    nq, nv = model.nq, model.nv
    zero, offsets = nq + nv + 3, nq + nv + 4
    gather = np.full(_N_SENSE, zero)  # no object: its slots stay 0
    gather[_JOINT_POS] = np.arange(nq)[ids.arm_qpos]
    gather[_SENSOR_SLICES["joint_vel"]] = nq + np.arange(nv)[ids.arm_dof]
    gather[_EE_POS] = nq + nv + np.arange(3)
    gather[_GRIPPER] = ids.finger_qpos.start
    if ids.object_body >= 0:
        obj = _SENSOR_SLICES["object_pos"].start
        gather[obj : obj + 7] = ids.object_qpos + np.arange(7)
    add = np.full(_N_SENSE, zero)
    add[_JOINT_POS] = offsets + np.arange(7)
    add[_GRIPPER] = ids.finger_qpos.start + 1
    return gather, add


def _view(array: np.ndarray, index: int | slice) -> np.ndarray:
    """``array[index]``, checked to be a view (the step writes through it)."""
    out = array[index]
    if not np.shares_memory(out, array):
        raise TypeError(f"index {index!r} does not give a view of the MjData array")
    return out


class PandaEnv(gym.Env):
    """Base class; see the task classes for the user documentation."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": int(round(1 / scene.CONTROL_PERIOD))}
    task_spec: TaskSpec  # set by each task class
    dense_uses_ee: bool = False  # the dense reward needs the TCP position (info["ee_pos"])
    dense_uses_grasp: bool = False  # ... and the grasp flag (info["is_grasped"])

    def __init__(
        self,
        reward_type: str = "sparse",
        action_mode: str | None = None,
        randomization: Any = None,
        render_mode: str | None = None,
        distance_threshold: float = 0.05,
        width: int = 480,
        height: int = 480,
        trajectory_robot: str | None = None,
        trajectory_params: Mapping | None = None,
    ) -> None:
        if reward_type not in REWARD_TYPES:
            raise ValueError(f"reward_type={reward_type!r}: use one of {REWARD_TYPES}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}: use None or 'rgb_array'")
        self.reward_type = reward_type
        self.distance_threshold = float(distance_threshold)
        self._threshold_sq = np.float32(self.distance_threshold**2)  # compared in float32
        self.render_mode = render_mode
        self._width, self._height = width, height
        self._renderer = None  # a manip_rl.render.Renderer, made on the first render()

        spec = self.task_spec
        self.model, self.ids = scene.build_model(spec)
        self.data = mujoco.MjData(self.model)
        # Views of the MjData arrays the step reads and writes, made once: each attribute access
        # through the bindings makes a new array object (about 0.2 us, several per step).
        d, ids = self.data, self.ids
        self._qpos, self._qvel = d.qpos, d.qvel
        self._ee_xpos = _view(d.site_xpos, ids.ee_site)
        self._ctrl_arm = _view(d.ctrl, ids.arm_actuators)
        self._ctrl_fingers = _view(d.ctrl, ids.finger_actuators)
        o = ids.object_qpos
        self._object_pos = _view(d.qpos, slice(o, o + 3)) if ids.object_body >= 0 else None
        self._dt = float(self.model.opt.timestep)
        self.action_spec = spec.action_spec(action_mode)
        self.layout = spec.layout(self.action_spec.dim)
        self.control_period = scene.CONTROL_PERIOD
        self.obs_slices = self.layout.slices()
        self._ee_slice = self.obs_slices["ee_pos"]
        self.randomization_config = load_config(randomization, self.task)
        self._randomizer = (
            DomainRandomizer(self.model, self.ids, self.randomization_config)
            if self.randomization_config is not None
            else None
        )
        self.randomization_sample: Sample | None = None

        goal_space = gym.spaces.Box(-np.inf, np.inf, (self.layout.goal_dim,), np.float32)
        self.observation_space = gym.spaces.Dict(
            {
                "observation": gym.spaces.Box(-np.inf, np.inf, (self.layout.obs_dim,), np.float32),
                "achieved_goal": goal_space,
                "desired_goal": goal_space,
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (self.action_spec.dim,), np.float32)
        self._action_shape = self.action_space.shape
        self._ee_mode = self.action_spec.mode == policy_io.EE_DELTA

        self.goal = np.zeros(3)
        self._prev_action = np.zeros(self.action_spec.dim)
        self._build_obs = policy_io.ObservationBuilder(self.layout)
        self._sensor_history: collections.deque[np.ndarray] = collections.deque(maxlen=1)
        self._command_queue: collections.deque = collections.deque(maxlen=1)
        self._observed = np.zeros(_N_SENSE)  # the sensor vector the policy saw last
        self._jacp = np.zeros((3, self.model.nv))
        self._noise_vec: np.ndarray | None = None  # per-step noise std of each sensor entry
        self._bias_vec = np.zeros(_N_SENSE)  # this episode's sensor bias
        self._action_noise = 0.0
        self._rng = self.np_random
        # Geoms of each finger body, as masks over all geoms, for the grasp test.
        finger_bodies = self.ids.arm_bodies[-2:]
        self._finger_geom = [self.model.geom_bodyid == b for b in finger_bodies]
        self._success_sq = self.distance_threshold**2
        self._sense_gather, self._sense_add = _sensor_gather(self.model, self.ids)
        # Optional: commands take the ROS bridge's trajectory path (its safety filter with motion
        # limits, a 1 kHz joint_trajectory_controller-like interpolator, Franka's reflex) so an
        # in-process evaluation moves the arm as sim_arm does under policy_bridge.
        self._trajectory_path = None
        if trajectory_robot is not None:
            from manip_rl.ros_bridge.arm_path import TrajectoryCommandPath

            self._trajectory_path = TrajectoryCommandPath(
                trajectory_robot, self.action_spec, self.control_period, trajectory_params
            )

    @property
    def task(self) -> str:
        """The task's key (``"push"``...), as the policy file's ``task`` names it."""
        return self.task_spec.key

    @property
    def has_gripper(self) -> bool:
        return self.task_spec.gripper

    # ----------------------------------------------------------------- Gymnasium API
    def reset(
        self, *, seed: int | None = None, options: Mapping | None = None
    ) -> tuple[dict[str, np.ndarray], dict]:
        super().reset(seed=seed)
        self._rng = self.np_random
        m, d, ids = self.model, self.data, self.ids
        info: dict[str, Any] = {}
        obs_latency = act_latency = 0
        if self._randomizer is not None:
            cfg = self.randomization_config
            self.randomization_sample = self._randomizer.sample(self.np_random)
            self._randomizer.apply(self.randomization_sample)
            self._noise_vec, self._bias_vec = np.zeros(_N_SENSE), np.zeros(_N_SENSE)
            for key, std in cfg.observation_noise.items():
                self._noise_vec[_SENSOR_SLICES[key]] = std
            for key, bias in self.randomization_sample.observation_bias.items():
                self._bias_vec[_SENSOR_SLICES[key]] = bias
            self._action_noise = cfg.action_noise
            self._action_noise_array = np.array(cfg.action_noise)  # see _MINUS_ONE
            obs_latency = self.randomization_sample.observation_latency
            act_latency = self.randomization_sample.action_latency
            info["randomization"] = self.randomization_sample.to_info()

        mujoco.mj_resetData(m, d)
        q = policy_io.PANDA_HOME + self.np_random.uniform(-0.05, 0.05, 7)
        d.qpos[ids.arm_qpos] = q - SIM_JOINT_OFFSETS
        d.ctrl[ids.arm_actuators] = q - SIM_JOINT_OFFSETS
        opening = self._initial_gripper_opening()
        d.qpos[ids.finger_qpos] = opening / 2
        d.ctrl[ids.finger_actuators] = opening / 2
        self._reset_task(options or {})
        m.site_pos[ids.goal_site] = self.goal
        mujoco.mj_forward(m, d)

        self._prev_action = np.zeros(self.action_spec.dim)
        self._sensor_history = collections.deque(maxlen=obs_latency + 1)
        self._command_queue = collections.deque(maxlen=act_latency + 1)
        first = self._measure()
        for _ in range(obs_latency + 1):
            self._sensor_history.append(first)
        # The command held during the actuator latency: what the controllers hold now (a task's
        # reset may have moved the arm or closed the gripper).
        hold = (
            d.ctrl[ids.arm_actuators] + SIM_JOINT_OFFSETS,
            2.0 * float(d.ctrl[ids.finger_actuators][0]) if self.has_gripper else None,
        )
        for _ in range(act_latency):
            self._command_queue.append(hold)
        if self._trajectory_path is not None:
            self._trajectory_path.reset(hold[0], d.time)
        obs = self._observation()
        info["is_success"] = float(self._is_success())
        return obs, info

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool, dict]:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self._action_shape:
            raise ValueError(
                f"action has shape {a.shape}; {self.spec.id if self.spec else self.task} "
                f"takes {self.action_space.shape}"
            )
        a = policy_io.sanitize_action(a)
        applied, sensor_noise = a, None
        if self._noise_vec is not None:
            # One draw per step for the action noise and the sensor noise after the physics.
            z = self._rng.standard_normal(a.shape[0] + _N_SENSE)
            sensor_noise = z[a.shape[0] :]
            if self._action_noise > 0:
                noisy = z[: a.shape[0]]
                noisy *= self._action_noise_array
                noisy += a
                applied = np.minimum(np.maximum(noisy, _MINUS_ONE), _ONE)
        # Targets are computed from the joint positions the policy observed, as on the robot.
        jac = ee_seen = None
        if self._ee_mode:
            jac, ee_seen = self._ee_jacobian(), self._observed[_EE_POS]
        self._command_queue.append(
            policy_io.sanitized_action_to_joint_targets(
                self.action_spec, applied, self._observed[_JOINT_POS], jac, ee_seen
            )
        )
        targets, gripper = self._command_queue[0]  # actuator latency: the oldest command
        d, dt = self.data, self._dt
        np.subtract(targets, SIM_JOINT_OFFSETS, out=self._ctrl_arm)
        if gripper is not None:
            self._ctrl_fingers.fill(0.5 * gripper)
        expected_time = d.time + scene.SUBSTEPS * dt
        path = self._trajectory_path
        if path is None:
            mujoco.mj_step(self.model, d, nstep=scene.SUBSTEPS)
        else:
            path.command(targets, self._observed[_JOINT_POS], d.time)
            ends = expected_time - dt * np.arange(scene.SUBSTEPS - 1, -1, -1)
            for target in path.positions(ends):  # each substep's end, ticks checked at once
                np.subtract(target, SIM_JOINT_OFFSETS, out=self._ctrl_arm)
                mujoco.mj_step(self.model, d)
        # MuJoCo answers a diverging state (NaN, inf or huge qpos/qvel/qacc) by resetting the
        # whole state to the model's defaults and stepping on: time jumps back. The rest of
        # such an episode would be the arm snapping to its zero pose, so the episode ends
        # here (truncated: not the policy's terminal state) and says why.
        unstable = d.time < expected_time - 0.5 * dt
        # mj_step leaves body positions at the start of the last substep; refresh them so the
        # observation and reward see the state the physics reached (Gymnasium #821).
        mujoco.mj_kinematics(self.model, d)
        self._after_physics()

        self._prev_action = a
        self._sensor_history.append(self._measure(sensor_noise))
        obs = self._observation()
        ee = obs["observation"][self._ee_slice]
        ach, des = obs["achieved_goal"], obs["desired_goal"]
        grasped = np.float32(self.is_grasped()) if self.dense_uses_grasp else None
        if self.reward_type == "sparse":
            diff = ach - des
            reward = -1.0 if diff.dot(diff) > self._threshold_sq else 0.0
            terms = {"goal_reached": reward}
        else:
            terms = {k: float(v) for k, v in self._dense_terms(ach, des, ee, grasped).items()}
            reward = sum(terms.values())
        info = {
            "is_success": 1.0 if self._is_success() else 0.0,
            "reward_terms": terms,
            # What compute_reward needs, besides the goals, to recompute the dense reward.
            "ee_pos": ee,
        }
        if grasped is not None:
            info["is_grasped"] = grasped
        if path is not None:
            info["reflexes"] = path.reflexes  # Franka reflexes since the env was made
        if unstable:
            info["physics_unstable"] = True
            info["is_success"] = 0.0
        # Manipulation tasks here have no terminal state: the episode ends only by the time
        # limit in the registration (truncation, never termination; SB3 #633), or when the
        # physics diverged (truncation too).
        return obs, reward, False, unstable, info

    def compute_reward(
        self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any
    ) -> np.ndarray | float:
        """Reward for (batches of) goals; ``info`` may be one dict, a sequence of dicts or None.

        Vectorized so SB3's HER replay buffer can relabel goals in one call.
        """
        achieved = np.asarray(achieved_goal, dtype=np.float32)
        desired = np.asarray(desired_goal, dtype=np.float32)
        if self.reward_type == "sparse":
            diff = achieved - desired
            far = np.sum(diff * diff, axis=-1) > self._threshold_sq
            return -far.astype(np.float32)
        needs = [k for k, used in (("ee_pos", self.dense_uses_ee),
                                   ("is_grasped", self.dense_uses_grasp)) if used]  # fmt: skip
        if needs and info is None:
            raise ValueError(
                f"{type(self).__name__}'s dense reward needs the step's "
                f"{' and '.join(f'info[{k!r}]' for k in needs)}: pass the step's info to "
                "compute_reward"
            )
        ee = _info_values(info, "ee_pos") if self.dense_uses_ee else None
        grasped = _info_values(info, "is_grasped") if self.dense_uses_grasp else None
        terms = self._dense_terms(achieved, desired, ee, grasped)
        total = sum(terms.values())
        return np.float32(total) if np.ndim(total) == 0 else total.astype(np.float32)

    @property
    def trajectory_path(self) -> Any:
        """The FR3-style command path (:class:`manip_rl.ros_bridge.arm_path.TrajectoryCommandPath`)
        when made with ``trajectory_robot=...``, else None."""
        return self._trajectory_path

    # Control steps a task's success must hold for (None: success is instantaneous); the
    # batched backend's success test reads it.
    success_hold_steps: int | None = None

    def _dense_terms(
        self,
        achieved: np.ndarray,
        desired: np.ndarray,
        ee: np.ndarray | None,
        grasped: np.ndarray | None = None,
        xp: Any = np,
    ) -> dict[str, np.ndarray]:
        """The dense reward's terms, by name, for (batches of) achieved goal, desired goal,
        TCP position and grasp flag (``ee`` and ``grasped`` are None where a task's terms do not
        use them). One function
        serves the step and ``compute_reward``, so relabelled goals get exactly the reward a
        step would have given. ``xp`` is the array module the terms are computed with: numpy
        here, :data:`manip_rl.envs.warp.torch_ops.TORCH` (numpy's names on torch tensors) for
        the batched backend, so a task's reward is written once, with ``xp.`` where it would
        write ``np.`` (``sqrt``, ``tanh``, ``sum(axis=, keepdims=)``, ``maximum``, ``where``,
        ``asarray``). Default: minus the distance."""
        diff = achieved - desired
        return {"goal_distance": -xp.sqrt(xp.sum(diff * diff, axis=-1))}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            from manip_rl.render import Renderer  # picks the GL backend on the first frame

            self._renderer = Renderer(self.model, self._height, self._width)
        return self._renderer.render(self.data, camera="front")

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ----------------------------------------------------------------- sensing
    def _measure(self, noise: np.ndarray | None = None) -> np.ndarray:
        """What the robot's sensors read now (policy_io.SENSOR_FIELDS order): the true state plus
        per-step noise and this episode's bias."""
        # Two gathers from [qpos | qvel | TCP position | 0 | joint offsets] (_sensor_gather):
        # the state, plus the robot convention's joint offsets and the second finger (the
        # gripper opening is the sum of the fingers' positions).
        src = np.concatenate((self._qpos, self._qvel, self._ee_xpos, _ZERO, SIM_JOINT_OFFSETS))
        v = src.take(self._sense_gather)
        v += src.take(self._sense_add)
        if self._noise_vec is not None:
            if noise is None:
                noise = self._rng.standard_normal(_N_SENSE)
            v += self._noise_vec * noise + self._bias_vec
        return v

    def read_sensors(self, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """What the robot's sensors read now, by field (``policy_io.SENSOR_FIELDS``, robot
        convention): the true state plus this episode's per-step noise and bias, the reading
        ``step`` takes after its physics (the observation latency then delays whole readings).

        ``rng`` draws the per-step noise (default: the env's own stream); a driver that steps the
        physics itself (``sim_arm``) passes its own, so the episodes' sampling stays untouched.
        ``ee_pos`` is as of the last ``mj_kinematics`` / ``mj_forward``.
        """
        noise = None
        if self._noise_vec is not None:
            noise = (self._rng if rng is None else rng).standard_normal(_N_SENSE)
        v = self._measure(noise)
        return {name: v[sl] for name, sl in _SENSOR_SLICES.items()}

    def is_success(self) -> bool:
        """The task's success test on the true (noise-free) state, as ``info["is_success"]``
        reports it. A task whose test has a history (PandaLift's hold) counts control periods
        through :meth:`advance_task_state`."""
        return self._is_success()

    def advance_task_state(self) -> None:
        """Advance the task's history (PandaLift: how long the cube has been held) by one control
        period, as ``step`` does after its physics. For a driver that steps the physics itself
        (``sim_arm``): call it once per ``control_period`` of simulated time."""
        self._after_physics()

    def _observation(self) -> dict[str, np.ndarray]:
        self._observed = self._sensor_history[0]
        return self._build_obs(self._observed, self.goal, self._prev_action)

    def _ee_jacobian(self) -> np.ndarray:
        mujoco.mj_comPos(self.model, self.data)
        mujoco.mj_jacSite(self.model, self.data, self._jacp, None, self.ids.ee_site)
        return self._jacp[:, self.ids.arm_dof]

    # ----------------------------------------------------------------- task hooks
    def _initial_gripper_opening(self) -> float:
        return policy_io.GRIPPER_MAX_OPENING

    def _reset_task(self, options: Mapping) -> None:
        raise NotImplementedError

    def _achieved_true(self) -> np.ndarray:
        """The true (noise-free) achieved goal, for success."""
        raise NotImplementedError

    def _after_physics(self) -> None:
        """Called once per step after the physics, before the reward and success: where a task
        keeps state that depends on the episode's history (PandaLift: how long the cube has
        been held). Default: nothing."""

    def _is_success(self) -> bool:
        diff = self._achieved_true() - self.goal
        return bool(diff.dot(diff) < self._success_sq)

    # ----------------------------------------------------------------- helpers for tasks
    @property
    def ee_position(self) -> np.ndarray:
        """True end-effector position (m, base frame)."""
        return self.data.site_xpos[self.ids.ee_site].copy()

    def is_grasped(self) -> bool:
        """Whether both fingers touch the cube (MuJoCo's contacts after the last step)."""
        if self.ids.object_body < 0:
            return False
        geom = self.data.contact.geom  # (ncon, 2)
        if geom.shape[0] == 0:
            return False
        obj = self.ids.object_geom
        other = np.where(geom[:, 0] == obj, geom[:, 1], np.where(geom[:, 1] == obj, geom[:, 0], -1))
        other = other[other >= 0]
        return bool(self._finger_geom[0][other].any() and self._finger_geom[1][other].any())

    @property
    def object_position(self) -> np.ndarray:
        o = self.ids.object_qpos
        return self.data.qpos[o : o + 3].copy()

    def _set_object(self, xy: Sequence[float]) -> None:
        o = self.ids.object_qpos
        half = float(self.model.geom_size[self.ids.object_geom, 2])
        self.data.qpos[o : o + 3] = (xy[0], xy[1], half)
        self.data.qpos[o + 3 : o + 7] = (1.0, 0.0, 0.0, 0.0)
