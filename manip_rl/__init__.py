"""manip_rl: domain-randomized MuJoCo manipulation, policy-gradient training, TorchScript export and
a ROS 2 bridge for Franka Panda arms."""

import os as _os

__version__ = "0.1.0"

# Offscreen rendering without a display: OSMesa (Debian's libosmesa6) works on any CPU machine.
# MuJoCo reads this when it is first imported, so it is set before anything imports mujoco.
if not _os.environ.get("DISPLAY"):
    _os.environ.setdefault("MUJOCO_GL", "osmesa")

try:  # Registration needs Gymnasium; the robot-side loader (export) must import without it.
    import gymnasium as _gym  # noqa: F401
except ImportError:  # pragma: no cover - exercised by the export isolation test
    pass
else:
    from manip_rl.envs import register_envs as _register

    _register()
