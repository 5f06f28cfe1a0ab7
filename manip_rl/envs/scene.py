"""The Panda tabletop scene: the Franka model from the installed gymnasium-robotics package, a table,
an optional cube and a goal marker, compiled with MuJoCo and resolved into ids by name.

One env step simulates 40 ms, as FetchPush-v4 does (a 25 Hz control period), in 15 substeps of
2.67 ms where Fetch takes 20 of 2 ms. Fifteen balances the two speed goals of bench/env_throughput.py:
fewer substeps make each env step cheaper, while more of them keep Python's fixed cost per step a
small share next to the physics. Model choices for speed (DESIGN.md, "Physics budget"): the Euler
integrator (joint damping integrated implicitly, as MuJoCo's Euler does), arm links that cannot
touch each other filtered out of collision detection, and the base links out of it altogether;
gravity compensation on the arm, as the Panda's own controller provides on a real robot.

Joint damping and armature are set near critical damping for the model's servo gains (kp 870 on
joints 1-4, 120 on 5-7): the kitchen model's damping (100 and 10, about three times critical) lets
a joint cover only a quarter of a commanded step in one 40 ms control period and caps the arm
near 0.7 rad/s, a third of a real Panda's 2.175 rad/s. With the values below a full action moves
the joints at 1.1-1.7 rad/s, under Franka's limits; randomization scales damping by logU[0.3, 3]
around them, which reaches the kitchen model's values.
"""

from __future__ import annotations

import copy
import dataclasses
import functools

import mujoco
import numpy as np

from manip_rl.envs.spec import TaskSpec
from manip_rl.robots.model import SIM_ARM_ACTUATORS as _SIM_ARM_ACTUATORS
from manip_rl.robots.model import SIM_ARM_JOINTS as _SIM_ARM_JOINTS
from manip_rl.robots.model import SIM_FINGER_ACTUATORS as _SIM_FINGER_ACTUATORS
from manip_rl.robots.model import SIM_FINGER_JOINTS as _SIM_FINGER_JOINTS
from manip_rl.robots.model import franka_assets_dir

CONTROL_PERIOD = 0.04  # s (25 Hz), the simulated time per env step of FetchPush-v4 and panda-gym
SUBSTEPS = 15  # physics steps per control step
TIMESTEP = CONTROL_PERIOD / SUBSTEPS  # 2.67 ms; stable with Euler here (solref >= 2 dt)
# Euler, not implicitfast: since MuJoCo 3.14, implicitfast launches the cube out of some finger
# pushes (6 of 40 scripted Push episodes on 4.0.0 moved it faster than 2 m/s, against 0 on
# 3.13), and PPO learned Push more slowly there (return 24-26 at 300k steps, 30-32 on 3.11);
# Euler has no launches on either release, the same physics on 3.13 and 4.0.0 within 3e-7 on
# the PickPlace episodes, and the 3.11 learning curve (bench/mujoco_physics.py; README).
INTEGRATOR = "Euler"
ARM_DAMPING = (40.0, 40.0, 40.0, 40.0, 4.0, 4.0, 4.0)  # N m s/rad
ARM_ARMATURE = 0.1  # kg m^2, reflected rotor inertia (order of the Panda's, Gaz et al. 2019)
CUBE_HALF_SIZE = 0.025  # m, FetchPush's 5 cm block


def _scene_xml(task: str, has_object: bool) -> str:
    a = franka_assets_dir()
    cube = ""
    if has_object:
        s = CUBE_HALF_SIZE
        cube = f"""
    <body name="object" pos="0.5 0 {s}">
      <freejoint name="object_joint"/>
      <geom name="object" type="box" size="{s} {s} {s}" mass="0.1" rgba="0.85 0.3 0.2 1"
            friction="1 0.005 0.0001" contype="1" conaffinity="3" condim="4"/>
    </body>"""
    return f"""<mujoco model="manip_rl_panda_{task}">
  <include file="{a}/assets.xml"/>
  <compiler angle="radian" meshdir="{a}/meshes"/>
  <include file="{a}/actuator.xml"/>
  <option timestep="{TIMESTEP}" integrator="{INTEGRATOR}"/>
  <visual><global offwidth="640" offheight="480"/></visual>
  <asset>
    <texture name="floor_tex" type="2d" builtin="checker" rgb1=".2 .3 .4" rgb2=".1 .15 .2"
             width="256" height="256"/>
    <material name="floor_mat" texture="floor_tex" texrepeat="4 4"/>
  </asset>
  <worldbody>
    <light pos="0.5 -1 2" dir="0 0.5 -1" diffuse=".8 .8 .8" castshadow="false"/>
    <light pos="0.5 1 2" dir="0 -0.5 -1" diffuse=".5 .5 .5"/>
    <geom name="floor" type="plane" size="3 3 0.1" pos="0 0 -0.75" material="floor_mat"
          contype="0" conaffinity="0"/>
    <geom name="table" type="box" size="0.55 0.6 0.02" pos="0.4 0 -0.02" rgba=".6 .5 .4 1"
          friction="1 0.005 0.0001" contype="1" conaffinity="3"/>
    <camera name="front" pos="1.6 1.0 1.05" xyaxes="-0.610 0.792 0 -0.355 -0.273 0.894"/>
    <body name="robot_base"><include file="{a}/chain.xml"/></body>{cube}
    <site name="goal" pos="0.5 0 0.2" size="0.02" rgba="0.2 0.8 0.2 0.6" type="sphere"/>
  </worldbody>
</mujoco>"""


@dataclasses.dataclass(frozen=True)
class SceneIds:
    """Indices resolved by name once, so no code hard-codes a number. Joint and actuator groups
    are slices (checked contiguous), which index MjData without a copy."""

    arm_qpos: slice
    arm_dof: slice
    arm_actuators: slice
    finger_qpos: slice
    finger_dof: slice
    finger_actuators: slice
    arm_bodies: np.ndarray
    ee_site: int
    goal_site: int
    table_geom: int
    object_body: int  # -1 when the task has no object
    object_geom: int
    object_qpos: int  # first of 7 (x y z qw qx qy qz)
    object_dof: int  # first of 6


def _compile(task: str, has_object: bool) -> mujoco.MjModel:
    spec = mujoco.MjSpec.from_string(_scene_xml(task, has_object))
    for body in spec.bodies:
        if body.name.startswith("panda0_"):
            body.gravcomp = 1.0
    for geom in spec.geoms:
        if geom.classname.name != "panda_col":
            continue
        if geom.meshname in ("link0_col", "link1_col"):
            # The base links sit on the table and cannot reach the cube.
            geom.contype, geom.conaffinity = 0, 0
        else:
            # Collide with the table and cube (conaffinity 3) but never arm with arm.
            geom.contype, geom.conaffinity = 2, 0
    model = spec.compile()
    for joint_name, damping in zip(_SIM_ARM_JOINTS, ARM_DAMPING, strict=True):
        dof = model.joint(joint_name).dofadr[0]
        model.dof_damping[dof], model.dof_armature[dof] = damping, ARM_ARMATURE
    return model


def build_model(task: str | TaskSpec) -> tuple[mujoco.MjModel, SceneIds]:
    """A fresh compiled model of the task's scene (each env owns its own copy, since domain
    randomization writes into it) and its ids. ``task``: a spec, or a name the registry knows
    (``"push"``, ``"PandaPush"``)."""
    from manip_rl.envs import registry  # the registry imports the task modules, which import this

    spec = registry.get(task)
    model = copy.deepcopy(_cached_model(spec.key, spec.has_object))
    return model, _resolve_ids(model)


@functools.cache
def _cached_model(task: str, has_object: bool) -> mujoco.MjModel:
    return _compile(task, has_object)


def _resolve_ids(m: mujoco.MjModel) -> SceneIds:
    joint = m.joint
    arm = [joint(n) for n in _SIM_ARM_JOINTS]
    fingers = [joint(n) for n in _SIM_FINGER_JOINTS]
    has_object = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "object") >= 0
    obj_joint = joint("object_joint") if has_object else None
    arm_bodies = [m.body(f"panda0_link{i}").id for i in range(1, 8)]
    arm_bodies += [m.body(n).id for n in ("panda0_leftfinger", "panda0_rightfinger")]
    return SceneIds(
        arm_qpos=_contiguous([int(j.qposadr[0]) for j in arm], "arm qpos"),
        arm_dof=_contiguous([int(j.dofadr[0]) for j in arm], "arm dof"),
        arm_actuators=_contiguous([m.actuator(n).id for n in _SIM_ARM_ACTUATORS], "arm actuators"),
        finger_qpos=_contiguous([int(j.qposadr[0]) for j in fingers], "finger qpos"),
        finger_dof=_contiguous([int(j.dofadr[0]) for j in fingers], "finger dof"),
        finger_actuators=_contiguous(
            [m.actuator(n).id for n in _SIM_FINGER_ACTUATORS], "finger actuators"
        ),
        arm_bodies=np.array(arm_bodies),
        ee_site=m.site("end_effector").id,
        goal_site=m.site("goal").id,
        table_geom=m.geom("table").id,
        object_body=m.body("object").id if has_object else -1,
        object_geom=m.geom("object").id if has_object else -1,
        object_qpos=int(obj_joint.qposadr[0]) if has_object else -1,
        object_dof=int(obj_joint.dofadr[0]) if has_object else -1,
    )


def _contiguous(indices: list[int], what: str) -> slice:
    if indices != list(range(indices[0], indices[0] + len(indices))):
        raise RuntimeError(f"the Franka model's {what} are not contiguous ({indices})")
    return slice(indices[0], indices[0] + len(indices))
