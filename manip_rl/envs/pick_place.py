"""Kept for old imports: the task now lives in :mod:`manip_rl.envs.tasks.pick_place`."""

from manip_rl.envs.tasks.pick_place import *  # noqa: F403
from manip_rl.envs.tasks.pick_place import TASK  # noqa: F401
