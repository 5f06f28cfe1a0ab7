"""Training-side wrappers for policies with memory and a privileged critic.

- :class:`HistoryStack` / :class:`ObservationHistory`: the policy sees its last ``k`` flat
  observations, newest first (each one carries the previous action, so the last ``k`` actions
  are in there too). Before an episode's first step the older slots are zeros, which is what
  the exported file's state resets to, so the file reproduces the stack exactly (see
  ``manip_rl.export.flat_policy.HistoryPolicy``).
- :class:`PrivilegedObservation`: the observation becomes ``{"obs": actor input, "privileged":
  simulator truth}`` for an asymmetric actor-critic (``manip_rl.policies.privileged``). The
  privileged vector is what the robot cannot measure: the episode's randomization as written
  into the model (joint damping, armature, friction loss, actuator gains, link and object
  masses, contact friction, gravity), its latencies and sensor bias, and the noiseless sensor
  reading (object pose included). Export keeps the actor, which never sees it.

Both wrap the flat-observation env that ``manip_rl.policies.config.EnvFactory`` builds.
"""

from __future__ import annotations

from typing import Any, Final

import gymnasium as gym
import numpy as np

from manip_rl import policy_io

OBS_KEY: Final = "obs"
PRIVILEGED_KEY: Final = "privileged"


class HistoryStack:
    """The last ``k`` flat observations of one episode as one vector, newest first; slots not
    yet filled are zeros. Numpy only: verification replays it beside the exported file."""

    def __init__(self, k: int, dim: int) -> None:
        if k < 1:
            raise ValueError(f"history k={k}: must be at least 1")
        self.k, self.dim = int(k), int(dim)
        self.buffer = np.zeros(self.k * self.dim, dtype=np.float32)

    def reset(self) -> None:
        self.buffer[:] = 0.0

    def push(self, obs: np.ndarray) -> np.ndarray:
        """Add this step's observation; returns the stacked vector (a copy)."""
        if self.k > 1:
            self.buffer[self.dim :] = self.buffer[: -self.dim].copy()
        self.buffer[: self.dim] = obs
        return self.buffer.copy()


class ObservationHistory(gym.ObservationWrapper):
    """A flat-observation env whose observation is the last ``k`` observations, newest first."""

    def __init__(self, env: gym.Env, k: int) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"ObservationHistory takes a flat Box observation, got {space}")
        self.stack = HistoryStack(k, space.shape[0])
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, (self.stack.k * self.stack.dim,), np.float32
        )

    def reset(self, **kwargs: Any) -> tuple[np.ndarray, dict]:
        self.stack.reset()
        return super().reset(**kwargs)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return self.stack.push(observation)


def _friction_geoms(env: Any) -> np.ndarray:
    # The geoms DomainRandomizer draws friction for: table, fingers, object.
    model, ids = env.model, env.ids
    fingers = np.flatnonzero(np.isin(model.geom_bodyid, ids.arm_bodies[-2:]))
    obj = [ids.object_geom] if ids.object_body >= 0 else []
    return np.array([ids.table_geom, *fingers, *obj], dtype=np.intp)


def privileged_vector(env: Any) -> np.ndarray:
    """What only the simulator knows now, for the critic (see the module docstring). Read from
    the model itself, so it has the same size whatever ranges the run draws (none included).
    ``env``: a manip_rl PandaEnv (``env.unwrapped``)."""
    m, ids = env.model, env.ids
    arm_dof, act = ids.arm_dof, ids.arm_actuators
    obj_mass = [m.body_mass[ids.object_body]] if ids.object_body >= 0 else [0.0]
    sample = env.randomization_sample
    latencies = [0.0, 0.0] if sample is None else [sample.action_latency,
                                                   sample.observation_latency]  # fmt: skip
    bias = env._bias_vec
    measured = env._measure(np.zeros(policy_io.SENSOR_DIM)) if env._noise_vec is not None else None
    # _measure adds the episode's bias to every reading; without noise or bias it is the truth.
    truth = (measured - bias) if measured is not None else env._measure()
    return np.concatenate(
        (
            m.dof_damping[arm_dof],
            m.dof_armature[arm_dof],
            m.dof_frictionloss[arm_dof],
            m.actuator_gainprm[act, 0],
            m.body_mass[ids.arm_bodies],
            obj_mass,
            m.geom_friction[_friction_geoms(env), 0],
            m.opt.gravity,
            latencies,
            bias,
            truth,
        )
    ).astype(np.float32)


class PrivilegedObservation(gym.Wrapper):
    """``{"obs": the wrapped env's flat observation, "privileged": privileged_vector}``."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"PrivilegedObservation takes a flat Box observation, got {space}")
        n = privileged_vector(env.unwrapped).shape[0]
        self.observation_space = gym.spaces.Dict(
            {
                OBS_KEY: space,
                PRIVILEGED_KEY: gym.spaces.Box(-np.inf, np.inf, (n,), np.float32),
            }
        )

    def _wrap(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        return {OBS_KEY: obs, PRIVILEGED_KEY: privileged_vector(self.env.unwrapped)}

    def reset(self, **kwargs: Any) -> tuple[dict, dict]:
        obs, info = self.env.reset(**kwargs)
        return self._wrap(obs), info

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._wrap(obs), reward, terminated, truncated, info


def wrap_for_training(env: gym.Env, history: int = 1, privileged: bool = False) -> gym.Env:
    """The flat-observation ``env`` as a run with ``history`` and ``privileged_critic`` sees it."""
    if history > 1:
        env = ObservationHistory(env, history)
    if privileged:
        env = PrivilegedObservation(env)
    return env
