"""Where the Franka simulation model comes from: the installed gymnasium-robotics package.

No robot model is copied into this repository; ``franka_assets_dir`` finds the package's
kitchen Franka (the Panda's kinematics, meshes and actuators) without importing the package,
whose import registers dozens of envs and prints notices.
"""

from __future__ import annotations

import importlib.util
import os

# Names inside the kitchen Franka model (the MJCF's own, not the real robot's).
SIM_ARM_JOINTS = tuple(f"robot:panda0_joint{i}" for i in range(1, 8))
SIM_FINGER_JOINTS = ("robot:panda0_finger_joint1", "robot:panda0_finger_joint2")
SIM_ARM_ACTUATORS = tuple(f"panda0_joint{i}" for i in range(1, 8))
SIM_FINGER_ACTUATORS = ("r_gripper_finger_joint", "l_gripper_finger_joint")
TCP_SITE = "end_effector"


def franka_assets_dir() -> str:
    """The folder of gymnasium-robotics' Franka model (``chain.xml``, ``assets.xml``, meshes)."""
    spec = importlib.util.find_spec("gymnasium_robotics")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "gymnasium-robotics is not installed; manip_rl loads the Franka Panda model from it: "
            "pip install 'gymnasium-robotics==1.4.2'"
        )
    root = spec.submodule_search_locations[0]
    path = os.path.join(root, "envs", "assets", "kitchen_franka", "franka_assets")
    if not os.path.isfile(os.path.join(path, "chain.xml")):
        raise RuntimeError(
            f"the Franka model was not found under {path}: reinstall gymnasium-robotics"
        )
    return path


def arm_xml() -> str:
    """MJCF of the arm alone, its base at the world origin (the scenes put it there too)."""
    a = franka_assets_dir()
    return f"""<mujoco model="manip_rl_franka_arm">
  <include file="{a}/assets.xml"/>
  <compiler angle="radian" meshdir="{a}/meshes"/>
  <worldbody>
    <body name="robot_base"><include file="{a}/chain.xml"/></body>
  </worldbody>
</mujoco>"""
