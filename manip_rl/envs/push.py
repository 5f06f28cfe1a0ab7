"""Kept for old imports: the task now lives in :mod:`manip_rl.envs.tasks.push`."""

from manip_rl.envs.tasks.push import *  # noqa: F403
from manip_rl.envs.tasks.push import TASK  # noqa: F401
