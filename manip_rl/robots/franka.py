"""Franka Emika Panda and Franka Research 3: names and limits from Franka's datasheets.

Sources: Franka's "Robot and interface specifications" (frankaemika.github.io/docs/control_parameters.html)
for the Panda, and the FR3 datasheet / franka_description's joint limits for the FR3. Both arms share
the Panda's kinematics (same DH parameters), so both use the same simulation model: the Panda of the
installed gymnasium-robotics package (``manip_rl.robots.model``), whose joints 6 and 7 have their
zeros rotated by pi/2 and pi/4 (``sim_joint_offsets``; checked by forward kinematics in
tests/test_policy_io.py).
"""

from __future__ import annotations

import numpy as np

from manip_rl.robots.description import RobotDescription

# Franka's "ready" pose (franka_ros2 / libfranka examples): end effector pointing down.
READY_POSE = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
GRIPPER_MAX_OPENING = 0.08  # metres between the fingers, Franka Hand datasheet
_SIM_OFFSETS = np.array([0.0, 0.0, 0.0, 0.0, 0.0, np.pi / 2, np.pi / 4])

PANDA = RobotDescription(
    name="panda",
    joint_names=tuple(f"panda_joint{i}" for i in range(1, 8)),
    finger_joint_names=("panda_finger_joint1", "panda_finger_joint2"),
    # Panda datasheet, q_min / q_max (rad) (Franka, "Robot and interface specifications", Panda
    # section). Joint 6's lower limit is -0.0175; the -0.0865 below is the simulation model's.
    lower=np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]),
    upper=np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]),
    # Panda datasheet, dq_max (rad/s), ddq_max (rad/s^2), dddq_max (rad/s^3).
    velocity=np.array([2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100]),
    acceleration=np.array([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0]),
    jerk=np.array([7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0]),
    home=READY_POSE,
    gripper_max_opening=GRIPPER_MAX_OPENING,
    sim_joint_offsets=_SIM_OFFSETS,
    source="Franka Panda datasheet (Robot and interface specifications)",
)

FR3 = RobotDescription(
    name="fr3",
    joint_names=tuple(f"fr3_joint{i}" for i in range(1, 8)),
    finger_joint_names=("fr3_finger_joint1", "fr3_finger_joint2"),
    # FR3 datasheet, q_min / q_max (rad): Franka Robotics, "Robot and interface specifications",
    # FR3 section, the same values as franka_description's robots/fr3/joint_limits.yaml. Joint 6
    # starts at 0.5445 rad (the Panda's at -0.0175), so a Panda pose is not always an FR3 pose.
    lower=np.array([-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159]),
    upper=np.array([2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159]),
    # FR3 datasheet, dq_max (rad/s), ddq_max (rad/s^2), dddq_max (rad/s^3). (Later firmware
    # lowers dq_max near the position limits; these constant values are the upper bound.)
    velocity=np.array([2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]),
    acceleration=np.full(7, 10.0),
    jerk=np.full(7, 5000.0),
    home=READY_POSE,
    gripper_max_opening=GRIPPER_MAX_OPENING,
    sim_joint_offsets=_SIM_OFFSETS,
    source="Franka Research 3 datasheet (Robot and interface specifications)",
)

# The simulation model's own joint ranges in the robot convention (the kitchen Franka's ranges
# shifted by the joint offsets). Where they are tighter than the datasheet (joint 4's upper end,
# joint 6's upper end, joint 7's lower end), a policy trained in simulation never went further.
SIM_MODEL_LOWER = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0865, -2.1119])
SIM_MODEL_UPPER = np.array([2.8973, 1.7628, 2.8973, -0.4000, 2.8973, 3.6835, 2.8973])
