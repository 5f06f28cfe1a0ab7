"""manip_rl: domain-randomized MuJoCo manipulation, policy-gradient training, TorchScript export and
a ROS 2 bridge for Franka Panda arms."""

__version__ = "0.1.0"

# No OpenGL setup here: manip_rl.render picks a backend (MUJOCO_GL if set, else EGL, else OSMesa)
# when the first frame is rendered, so importing and stepping work on machines without any.

try:  # Registration needs Gymnasium; the robot-side loader (export) must import without it.
    import gymnasium as _gym  # noqa: F401
except ImportError:  # pragma: no cover - exercised by the export isolation test
    pass
else:
    from manip_rl.envs import register_envs as _register

    _register()
