"""Kept for old imports: each task's scripted controller now lives in its task module
(:mod:`manip_rl.envs.tasks`), the shared parts in :mod:`manip_rl.envs.control`."""

from manip_rl.envs.control import CartesianController, CubeController
from manip_rl.envs.registry import scripted_controller as scripted_policy
from manip_rl.envs.tasks.pick_place import ScriptedPickPlace
from manip_rl.envs.tasks.push import ScriptedPush
from manip_rl.envs.tasks.reach import ScriptedReach

__all__ = [
    "CartesianController",
    "CubeController",
    "ScriptedPickPlace",
    "ScriptedPush",
    "ScriptedReach",
    "scripted_policy",
]
