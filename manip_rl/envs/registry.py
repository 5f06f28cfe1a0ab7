"""The task registry: the one place where the rest of manip_rl learns about tasks.

It discovers every module of the :mod:`manip_rl.envs.tasks` package that defines ``TASK`` (a
:class:`~manip_rl.envs.spec.TaskSpec`), so adding a task is adding one module there (plus its
YAML files) and nothing else. The scene, the observation layouts, the export, ADR, the training
configuration and ``manip-rl envs`` all read the specs from here.

A task can be named by its spec name (``"PandaPush"``), its key (``"push"``) or one of its env
ids (``"manip_rl/PandaPushDense-v0"``); the ``Dense`` suffix is accepted everywhere.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from manip_rl import policy_io
from manip_rl.envs.spec import TaskSpec

TASKS_PACKAGE = "manip_rl.envs.tasks"


class UnknownTaskError(ValueError):
    """A task name, key or env id that no task module defines."""


@functools.cache
def tasks() -> Mapping[str, TaskSpec]:
    """Every task spec by name, in module order (``pkgutil`` over the tasks package)."""
    package = importlib.import_module(TASKS_PACKAGE)
    found: dict[str, TaskSpec] = {}
    keys: dict[str, str] = {}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{TASKS_PACKAGE}.{info.name}")
        spec = getattr(module, "TASK", None)
        if spec is None:
            continue  # a helper module shared by tasks
        if not isinstance(spec, TaskSpec):
            raise TypeError(f"{module.__name__}.TASK is a {type(spec).__name__}, not a TaskSpec")
        for kind, value, seen in (("name", spec.name, found), ("key", spec.key, keys)):
            if value in seen:
                raise ValueError(f"{module.__name__}: task {kind} {value!r} is defined twice")
        found[spec.name], keys[spec.key] = spec, spec.name
    return found


def names() -> tuple[str, ...]:
    """Every task's name, e.g. ``("PandaLift", "PandaPickPlace", ...)``."""
    return tuple(tasks())


def get(task: str | TaskSpec) -> TaskSpec:
    """The spec of a task named by name, key or env id (sparse or dense)."""
    if isinstance(task, TaskSpec):
        return task
    specs = tasks()
    stem = str(task).split("/")[-1].split("-v")[0]
    for candidate in (stem, stem.removesuffix("Dense")):
        if candidate in specs:
            return specs[candidate]
    for spec in specs.values():
        if spec.key == task:
            return spec
    raise UnknownTaskError(
        f"task {task!r} is unknown; use one of {', '.join(specs)} (or their keys "
        f"{', '.join(s.key for s in specs.values())}, or an env id from `manip-rl envs`)"
    )


def env_ids() -> list[str]:
    """Every registered id: the sparse and dense variant of each task."""
    return [env_id for spec in tasks().values() for env_id in spec.env_ids]


def register_envs() -> None:
    """Register both ids of every task with Gymnasium (idempotent). The vector entry point is
    the batched backend (``gym.make_vec(..., vectorization_mode="vector_entry_point",
    backend="warp")``, :mod:`manip_rl.envs.warp`, imported only when used)."""
    import gymnasium as gym

    from manip_rl.envs.warp import make_vec

    for spec in tasks().values():
        for env_id, reward_type in zip(spec.env_ids, ("sparse", "dense"), strict=True):
            if env_id in gym.registry:
                continue
            gym.register(
                id=env_id,
                entry_point=spec.entry_point,
                vector_entry_point=functools.partial(make_vec, task=spec.name),
                max_episode_steps=spec.episode_steps,
                kwargs={"reward_type": reward_type},
            )


def make_layout(task: str | TaskSpec, action_dim: int) -> policy_io.ObsLayout:
    """A task's observation layout for actions of ``action_dim`` values."""
    return get(task).layout(action_dim)


def scripted_controller(env: Any) -> Any:
    """The task's scripted controller for an env (its ``unwrapped.task`` decides which)."""
    base = env.unwrapped
    spec = get(base.task)
    if spec.controller is None:
        with_one = [s.name for s in tasks().values() if s.controller]
        raise ValueError(f"no scripted controller for task {spec.name}: {with_one} have one")
    module, _, cls = spec.controller.partition(":")
    return getattr(importlib.import_module(module), cls)(base.action_spec, base.layout)
