"""The observation/action contract: conventions checked against the simulated model."""

from __future__ import annotations

import numpy as np
import pytest

from manip_rl import policy_io
from manip_rl.envs.registry import make_layout
from manip_rl.envs.scene import build_model
from manip_rl.policy_io import (
    PANDA_HOME,
    PANDA_JOINT_LOWER,
    PANDA_JOINT_UPPER,
    SIM_JOINT_OFFSETS,
    Sensors,
)
from manip_rl.robots.kinematics import Kinematics


def test_policy_io_imports_numpy_only():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for m in ('mujoco', 'gymnasium', 'stable_baselines3', 'rclpy', 'torch'):\n"
        "    sys.modules[m] = None\n"
        "import manip_rl.policy_io as p\n"
        "fields = ('joint_pos', 'joint_vel', 'gripper_opening', 'ee_pos', 'object_pos',\n"
        "          'object_rel_pos', 'object_quat', 'prev_action')\n"
        "layout = p.layout_from_fields('push', fields, 'object_pos', 8)\n"
        "print(p.ObsLayout.from_json('push', layout.flat_fields()).flat_dim)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "42"


def test_home_pose_points_the_hand_down_in_the_franka_convention():
    kin = Kinematics()
    pos, rot = kin.ee_pose(PANDA_HOME)
    # Franka's ready pose: TCP about 0.3 m in front of the base, tool z axis pointing down, and
    # the fingers opening along the base y axis (which pins the joint-7 offset).
    assert 0.25 < pos[0] < 0.35 and abs(pos[1]) < 0.01
    np.testing.assert_allclose(rot[:, 2], [0, 0, -1], atol=0.01)
    np.testing.assert_allclose(abs(rot[:, 1] @ np.array([0, 1, 0])), 1.0, atol=0.01)


def test_kinematics_reposes_only_for_new_joint_positions_and_answers_as_a_fresh_model():
    """Kinematics skips mj_kinematics/mj_comPos for the state it is already posed at; any mix of
    calls over changing (and mutated-in-place) joint positions answers as a fresh model does."""
    rng = np.random.default_rng(0)
    kin = Kinematics()
    q = PANDA_HOME.copy()
    for _ in range(12):
        kind = rng.integers(4)
        if kind == 0:
            q = PANDA_HOME + rng.uniform(-0.3, 0.3, 7)
        elif kind == 1:
            q[rng.integers(7)] += 0.01  # the caller's array changed in place
        for call in rng.permutation(["pos", "pose", "jac", "jac6"]):
            ref = Kinematics()  # a fresh model for every answer: nothing cached
            if call == "pos":
                np.testing.assert_array_equal(kin.ee_pos(q), ref.ee_pos(q))
            elif call == "pose":
                for a, b in zip(kin.ee_pose(q), ref.ee_pose(q), strict=True):
                    np.testing.assert_array_equal(a, b)
            else:
                rot = call == "jac6"
                np.testing.assert_array_equal(
                    kin.ee_jacobian(q, rotation=rot), ref.ee_jacobian(q, rotation=rot)
                )


def test_joint_limits_lie_inside_the_simulated_model_ranges():
    model, ids = build_model("reach")
    sim_range = model.jnt_range[:7] + SIM_JOINT_OFFSETS[:, None]
    assert (PANDA_JOINT_LOWER >= sim_range[:, 0] - 1e-4).all()
    assert (PANDA_JOINT_UPPER <= sim_range[:, 1] + 1e-4).all()
    assert ((PANDA_HOME > PANDA_JOINT_LOWER) & (PANDA_HOME < PANDA_JOINT_UPPER)).all()


def test_layouts_describe_the_vector_the_builder_makes():
    for task, act_dim in (("reach", 7), ("push", 8), ("pick_place", 8)):
        layout = make_layout(task, act_dim)
        fields = layout.flat_fields()
        assert [f["key"] for f in fields[:2]] == ["achieved_goal", "desired_goal"]
        assert sum(f["size"] for f in fields) == layout.flat_dim
        assert all(f["unit"] for f in fields)
        sensors = Sensors(
            joint_pos=np.arange(7.0),
            joint_vel=np.arange(7.0) + 10,
            ee_pos=np.array([0.3, 0.0, 0.4]),
            gripper_opening=0.02,
            object_pos=np.array([0.5, 0.1, 0.025]),
            object_quat=np.array([1.0, 0, 0, 0]),
        )
        obs = policy_io.build_observation(
            layout, sensors, np.array([0.4, 0.1, 0.2]), np.full(act_dim, 0.5)
        )
        flat = policy_io.flatten_observation(obs)
        assert flat.shape == (layout.flat_dim,) and flat.dtype == np.float32
        by_name = {f["name"]: flat[f["start"] : f["start"] + f["size"]] for f in fields[2:]}
        np.testing.assert_allclose(by_name["joint_vel"], np.arange(7.0) + 10)
        np.testing.assert_allclose(by_name["prev_action"], 0.5)
        if task != "reach":
            np.testing.assert_allclose(by_name["object_rel_pos"], [0.2, 0.1, -0.375], atol=1e-6)


def test_a_layout_round_trips_through_its_json_and_bad_fields_are_refused():
    for task, act_dim in (("reach", 7), ("push", 4), ("pick_place", 8)):
        layout = make_layout(task, act_dim)
        assert policy_io.ObsLayout.from_json(task, layout.flat_fields()) == layout
    fields = make_layout("push", 8).flat_fields()
    renamed = [dict(f) for f in fields]
    renamed[3]["name"] = "joint_torque"
    with pytest.raises(ValueError, match=r"fields\[3\] = observation.joint_torque: unknown"):
        policy_io.layout_from_json("push", renamed)
    resized = [dict(f) for f in fields]
    resized[2]["size"] = 6  # joint_pos of 6 values: the offsets after it no longer tile
    with pytest.raises(ValueError, match="starts at"):
        policy_io.layout_from_json("push", resized)
    no_goal = [{**f, "start": f["start"] - 3} for f in fields[1:]]  # tiles, but no achieved goal
    with pytest.raises(ValueError, match="achieved_goal"):
        policy_io.layout_from_json("push", no_goal)
    with pytest.raises(ValueError, match=r"\['torque'\] are unknown"):
        policy_io.layout_from_fields("x", ("joint_pos", "torque"), "ee_pos", 3)


def test_missing_object_pose_is_an_error_for_push():
    layout = make_layout("push", 8)
    sensors = Sensors(joint_pos=np.zeros(7), joint_vel=np.zeros(7), ee_pos=np.zeros(3))
    with pytest.raises(ValueError, match="object_pos"):
        policy_io.build_observation(layout, sensors, np.zeros(3), np.zeros(8))


def test_action_mapper_clips_to_limits_and_holds_on_nan():
    spec = policy_io.make_action_spec("joint_delta", gripper=True)
    q = PANDA_JOINT_UPPER - 0.01
    targets, grip = policy_io.action_to_joint_targets(spec, np.ones(8), q)
    np.testing.assert_allclose(targets, PANDA_JOINT_UPPER)
    assert grip == pytest.approx(0.08)
    targets, grip = policy_io.action_to_joint_targets(
        spec, np.array([np.nan] * 7 + [-1.0]), PANDA_HOME
    )
    np.testing.assert_allclose(targets, PANDA_HOME)
    assert grip == 0.0
    targets, _ = policy_io.action_to_joint_targets(spec, np.full(8, 5.0), PANDA_HOME)
    np.testing.assert_allclose(
        targets, np.minimum(PANDA_HOME + spec.joint_scale, PANDA_JOINT_UPPER)
    )
    with pytest.raises(ValueError, match=r"\(8,\)"):
        policy_io.action_to_joint_targets(spec, np.zeros(7), PANDA_HOME)


def test_action_spec_round_trips_through_json():
    spec = policy_io.make_action_spec("ee_delta", gripper=True)
    again = policy_io.ActionSpec.from_json(spec.to_json())
    assert again.mode == spec.mode and again.dim == 4
    assert again.ee_z_min == spec.ee_z_min == policy_io.EE_Z_MIN
    assert policy_io.make_action_spec("joint_delta").ee_z_min is None
    np.testing.assert_array_equal(again.lower, spec.lower)


def test_ee_delta_mapping_moves_the_tcp_along_the_command():
    kin = Kinematics()
    spec = policy_io.make_action_spec("ee_delta")
    start = kin.ee_pos(PANDA_HOME)
    targets, _ = policy_io.action_to_joint_targets(
        spec, np.array([0.0, 0.0, -1.0]), PANDA_HOME, kin.ee_jacobian(PANDA_HOME), start
    )
    moved = kin.ee_pos(targets) - start
    assert moved[2] == pytest.approx(-spec.ee_scale, rel=0.1)
    assert np.abs(moved[:2]).max() < 0.1 * spec.ee_scale
    with pytest.raises(ValueError, match="ee_pos"):
        policy_io.action_to_joint_targets(
            spec, np.zeros(3), PANDA_HOME, kin.ee_jacobian(PANDA_HOME)
        )


def test_ee_delta_never_commands_the_tcp_below_its_floor():
    kin = Kinematics()
    spec = policy_io.make_action_spec("ee_delta")
    jac = kin.ee_jacobian(PANDA_HOME)
    start = kin.ee_pos(PANDA_HOME)
    down, sideways = np.array([0.0, 0.0, -1.0]), np.array([1.0, 0.0, -1.0])
    # Pretend the TCP is 1 cm above the floor: the downward step is cut to 1 cm.
    near = start.copy()
    near[2] = spec.ee_z_min + 0.01
    targets, _ = policy_io.action_to_joint_targets(spec, down, PANDA_HOME, jac, near)
    assert kin.ee_pos(targets)[2] - start[2] == pytest.approx(-0.01, rel=0.1)
    # At or below the floor: no downward motion, sideways motion intact, and from below it
    # the command climbs back.
    near[2] = spec.ee_z_min
    targets, _ = policy_io.action_to_joint_targets(spec, sideways, PANDA_HOME, jac, near)
    moved = kin.ee_pos(targets) - start
    assert abs(moved[2]) < 0.002 and moved[0] == pytest.approx(spec.ee_scale, rel=0.1)
    near[2] = spec.ee_z_min - 0.01
    targets, _ = policy_io.action_to_joint_targets(spec, down, PANDA_HOME, jac, near)
    assert kin.ee_pos(targets)[2] - start[2] == pytest.approx(0.01, rel=0.1)


def test_ee_delta_posture_pull_moves_joints_home_without_moving_the_tcp():
    kin = Kinematics()
    spec = policy_io.make_action_spec("ee_delta")
    assert spec.ee_posture_gain == policy_io.EE_POSTURE_GAIN > 0
    q = PANDA_HOME + np.array([0.3, -0.2, 0.25, 0.2, -0.3, 0.2, 0.4])
    jac, ee = kin.ee_jacobian(q), kin.ee_pos(q)
    targets, _ = policy_io.action_to_joint_targets(spec, np.zeros(3), q, jac, ee)
    dq = targets - q
    # Closer to home by about the gain's share, with the TCP held (first order: J dq ~ 0).
    assert np.linalg.norm(targets - PANDA_HOME) < 0.97 * np.linalg.norm(q - PANDA_HOME)
    assert np.linalg.norm(jac @ dq) < 0.05 * np.linalg.norm(dq)
    assert np.linalg.norm(kin.ee_pos(targets) - ee) < 0.003
