"""Kept for old imports: the task now lives in :mod:`manip_rl.envs.tasks.reach`."""

from manip_rl.envs.tasks.reach import *  # noqa: F403
from manip_rl.envs.tasks.reach import TASK  # noqa: F401
