"""What a robustness sweep runs: a policy file (:class:`FileActor`), the scripted controller
(:class:`ScriptedActor`), or a run directory exported on the fly (:func:`load_actor`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from manip_rl import policy_io
from manip_rl.transfer.shifts import RobustnessError


class Actor:
    """What the sweep runs: a name, an env id, an action mode, the env's other gym.make
    keywords (a policy file's ``env_kwargs``), and batched acting."""

    label: str
    env_id: str
    action_mode: str
    task: str
    env_kwargs: dict

    def bind(self, envs: Sequence[Any]) -> Callable[[list[dict]], np.ndarray]:
        raise NotImplementedError


class FileActor(Actor):
    def __init__(self, policy: Any, label: str) -> None:
        self.policy, self.label = policy, label
        self.env_id, self.task = policy.env_id, policy.task
        self.action_mode = policy.action_spec.mode
        self.env_kwargs = dict(policy.env_kwargs)

    def bind(self, envs: Sequence[Any]) -> Callable[[list[dict]], np.ndarray]:
        def act(obs: list[dict]) -> np.ndarray:
            flat = np.stack([policy_io.flatten_observation(o) for o in obs])
            # A stateful file (LSTM, history) starts each batch of episodes from zeros: the
            # episode loop resets a batch's envs together, so all are at step 0 only then.
            if getattr(self.policy, "stateful", False) and all(
                e.get_wrapper_attr("_elapsed_steps") == 0 for e in envs[: len(obs)]
            ):
                self.policy.reset()
            return self.policy.act(flat)

        return act


class ScriptedActor(Actor):
    def __init__(self, env_id: str, action_mode: str = policy_io.JOINT_DELTA) -> None:
        import gymnasium as gym

        import manip_rl  # noqa: F401  (registers the envs)

        if env_id not in gym.registry:
            raise RobustnessError(f"scripted:{env_id}: no such environment id")
        self.env_id, self.action_mode, self.env_kwargs = env_id, action_mode, {}
        self.label = f"scripted:{env_id.split('/')[-1]}"
        env = gym.make(env_id)
        self.task = env.unwrapped.task
        env.close()
        if self.task not in ("reach", "push"):
            raise RobustnessError(
                f"scripted:{env_id}: there is a scripted controller for Reach and Push only"
            )

    def bind(self, envs: Sequence[Any]) -> Callable[[list[dict]], np.ndarray]:
        from manip_rl.envs.scripted import scripted_policy

        ctrls = [scripted_policy(e) for e in envs]
        # The last batch of a point may hold fewer episodes than there are envs.
        return lambda obs: np.stack([c(o) for c, o in zip(ctrls[: len(obs)], obs, strict=True)])


def load_actor(spec: str, tmpdir: str, which: str | None = None) -> Actor:
    """A policy file, a run directory (its ``which`` model: best/final/latest, by default the
    best, else final, else latest; exported into ``tmpdir``), or ``scripted:ENV_ID``."""
    from manip_rl.export import PolicyFileError, export_policy, load_policy

    if spec.startswith("scripted:"):
        return ScriptedActor(spec.split(":", 1)[1])
    label = os.path.basename(os.path.normpath(spec))
    path = spec
    if os.path.isdir(spec):
        path = os.path.join(tmpdir, f"{len(os.listdir(tmpdir))}_{label}.pt")
        try:
            export_policy(spec, path, which=which)
        except ValueError as e:
            raise RobustnessError(f"{spec}: cannot export the run's policy: {e}") from None
    elif not os.path.isfile(spec):
        raise RobustnessError(
            f"POLICY {spec!r} is neither a policy file, a run directory nor scripted:ENV_ID"
        )
    else:
        label = os.path.splitext(label)[0]
    try:
        return FileActor(load_policy(path), label)
    except PolicyFileError as e:
        raise RobustnessError(str(e)) from None
