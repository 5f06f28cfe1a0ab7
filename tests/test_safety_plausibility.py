"""The ROS-free plausibility check of joint readings and the robot-side limits of the safety
filter: a reading or a policy file that no arm could produce never becomes a command."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from manip_rl import policy_io
from manip_rl.policy_io import PANDA_FINGER_JOINT_NAMES, PANDA_JOINT_NAMES
from manip_rl.robots import FR3, PANDA
from manip_rl.ros_bridge.plausibility import PlausibilityConfig, StateCheck
from manip_rl.ros_bridge.runner import DuplicateJointNames, JointMap, JointStateError
from manip_rl.ros_bridge.safety import (
    COMMAND_SPEED_FACTOR,
    DISABLED,
    HOLD_DUPLICATE_NAMES,
    HOLD_NONFINITE,
    HOLD_OUTSIDE_LIMITS,
    HOLD_STATE_JUMP,
    OK,
    SafetyConfig,
    SafetyFilter,
    bridge_control_period,
    check_action_spec_for_robot,
)

HOME = policy_io.PANDA_HOME
NAMES = [*PANDA_JOINT_NAMES, *PANDA_FINGER_JOINT_NAMES]
ZERO_VEL = [0.0] * 9


def make_check(tolerance: float = 0.05, margin: float = 1.5) -> StateCheck:
    return StateCheck(
        PlausibilityConfig.from_robot(PANDA, tolerance, margin),
        JointMap(PANDA_JOINT_NAMES, PANDA_FINGER_JOINT_NAMES),
    )


def state(q) -> list[float]:
    return [*np.asarray(q, dtype=float).tolist(), 0.02, 0.02]


def test_plausible_readings_pass_and_become_the_reference():
    check = make_check()
    v = check.check(NAMES, state(HOME), ZERO_VEL, t=0.0)
    assert v.ok and v.status == OK and check.problem == ""
    np.testing.assert_array_equal(v.reading.position, HOME)
    # A motion the arm can make (1 rad/s for 10 ms) passes.
    assert check.check(NAMES, state(HOME + 0.01), ZERO_VEL, t=0.01).ok


@pytest.mark.parametrize("value", [1e6, -1e6, 2.8973 + 0.06, -2.8973 - 0.06])
def test_a_reading_outside_the_robots_limits_is_rejected(value):
    """Issue #20 item 1: 1e6 rad on joint 1 was taken as real."""
    check = make_check()
    assert check.check(NAMES, state(HOME), ZERO_VEL, 0.0).ok
    q = HOME.copy()
    q[0] = value
    v = check.check(NAMES, state(q), ZERO_VEL, 10.0)  # long after: not a jump, the limits
    assert not v.ok and v.reading is None and v.status == HOLD_OUTSIDE_LIMITS
    assert check.problem == HOLD_OUTSIDE_LIMITS
    assert "panda_joint1" in v.detail and "state_tolerance" in v.detail
    # The tolerance: a reading 0.04 rad past the datasheet limit is noise, not implausible.
    q[0] = PANDA.upper[0] + 0.04
    assert check.check(NAMES, state(q), ZERO_VEL, 20.0).ok and check.problem == ""


def test_a_first_reading_outside_the_limits_is_rejected_too():
    check = make_check()
    q = HOME.copy()
    q[3] = 0.5  # joint 4's datasheet upper limit is -0.0698
    assert check.check(NAMES, state(q), ZERO_VEL, 0.0).status == HOLD_OUTSIDE_LIMITS


def test_duplicate_joint_names_are_rejected_whatever_the_values():
    """Issue #20 item 1: a JointState naming a joint twice ("last value wins")."""
    check = make_check()
    names = [*NAMES, "panda_joint1"]
    v = check.check(names, [*state(HOME), float(HOME[0])], [0.0] * 10, 0.0)
    assert v.status == HOLD_DUPLICATE_NAMES and "panda_joint1" in v.detail
    jm = JointMap(PANDA_JOINT_NAMES)
    with pytest.raises(DuplicateJointNames, match="panda_joint1"):
        jm.read(names, np.zeros(10), np.zeros(10))
    # Even a duplicate of a joint the policy does not use: the publisher is broken.
    with pytest.raises(DuplicateJointNames, match="extra"):
        jm.read([*PANDA_JOINT_NAMES, "extra", "extra"], np.zeros(9), np.zeros(9))


def test_a_jump_faster_than_the_arm_is_rejected_and_the_reference_kept():
    check = make_check(tolerance=0.05, margin=1.5)
    assert check.check(NAMES, state(HOME), ZERO_VEL, 0.0).ok
    q = HOME.copy()
    q[1] += 0.5  # 0.5 rad in 2 ms: 250 rad/s
    v = check.check(NAMES, state(q), ZERO_VEL, 0.002)
    assert v.status == HOLD_STATE_JUMP and "panda_joint2" in v.detail
    # Back where it was: plausible (the reference is the last accepted reading, HOME).
    assert check.check(NAMES, state(HOME), ZERO_VEL, 0.004).ok
    # The same step is accepted once the arm could have made it: 1.5 x 2.175 rad/s x t + 0.05.
    assert not check.check(NAMES, state(q), ZERO_VEL, 0.004 + 0.1).ok
    assert check.check(NAMES, state(q), ZERO_VEL, 0.004 + 0.14).ok
    # Just under and just over the bound.
    allowed = 1.5 * PANDA.velocity[1] * 0.01 + 0.05
    q2 = q.copy()
    q2[1] += allowed * 0.99
    assert check.check(NAMES, state(q2), ZERO_VEL, 0.144 + 0.01).ok
    q3 = q2.copy()
    q3[1] += allowed * 1.01
    assert check.check(NAMES, state(q3), ZERO_VEL, 0.154 + 0.01).status == HOLD_STATE_JUMP


def test_nonfinite_readings_are_rejected_and_contract_errors_raised():
    check = make_check()
    q = state(HOME)
    q[2] = float("nan")
    assert check.check(NAMES, q, ZERO_VEL, 0.0).status == HOLD_NONFINITE
    vel = list(ZERO_VEL)
    vel[0] = float("inf")
    assert check.check(NAMES, state(HOME), vel, 0.0).status == HOLD_NONFINITE
    assert check.check(NAMES, state(HOME), ZERO_VEL, 0.0).ok
    with pytest.raises(JointStateError, match="lacks"):
        check.check(NAMES[1:], state(HOME)[1:], ZERO_VEL[1:], 0.0)
    with pytest.raises(JointStateError, match="positions"):
        check.check(NAMES, state(HOME)[:5], ZERO_VEL, 0.0)


def test_bad_plausibility_parameters_are_refused_by_name():
    with pytest.raises(ValueError, match="state_tolerance"):
        PlausibilityConfig.from_robot(PANDA, tolerance=-1.0)
    with pytest.raises(ValueError, match="state_speed_margin"):
        PlausibilityConfig.from_robot(PANDA, speed_margin=0.5)


def test_filter_holds_while_the_state_is_implausible():
    f = SafetyFilter(SafetyConfig.for_robot(PANDA, policy_io.make_action_spec(), 0.04, 2.0))
    assert f.filter(HOME, HOME, 0.0, state_status=HOLD_OUTSIDE_LIMITS).status == DISABLED
    f.enable()
    # Enabled with an implausible state: nothing to hold yet, so nothing at all.
    d = f.filter(HOME + 0.01, HOME, 0.0, state_status=HOLD_STATE_JUMP)
    assert d.joints is None and d.status == HOLD_STATE_JUMP and d.holding
    first = f.filter(HOME + 0.001, HOME, 0.0).joints
    d = f.filter(HOME + 0.05, HOME, 0.0, state_status=HOLD_DUPLICATE_NAMES)
    assert d.holding
    np.testing.assert_array_equal(d.joints, first)


# ---------------------------------------------------------------- robot-side limits
def edited_spec(**changes) -> policy_io.ActionSpec:
    return dataclasses.replace(policy_io.make_action_spec(), **changes)


def test_a_policy_file_can_narrow_the_limits_but_never_widen_them():
    """Issue #20 item 2: limits of +-10 rad in an edited file were served."""
    wide = edited_spec(lower=np.full(7, -10.0), upper=np.full(7, 10.0))
    cfg = SafetyConfig.for_robot(PANDA, wide, 0.04, max_joint_speed=100.0)
    np.testing.assert_array_equal(cfg.lower, PANDA.lower)
    np.testing.assert_array_equal(cfg.upper, PANDA.upper)
    f = SafetyFilter(cfg)
    f.enable()
    d = f.filter(np.full(7, 10.0), np.clip(np.full(7, 9.0), PANDA.lower, PANDA.upper), 0.0)
    assert (d.joints <= PANDA.upper).all() and (d.joints >= PANDA.lower).all()
    # A narrower file narrows; the margin tightens the intersection.
    spec = policy_io.make_action_spec()
    cfg = SafetyConfig.for_robot(PANDA, spec, 0.04, limit_margin=0.1)
    np.testing.assert_allclose(cfg.upper, np.minimum(PANDA.upper, spec.upper) - 0.1)
    assert cfg.upper[3] == pytest.approx(-0.5)  # the policy's -0.4 (the sim's), not -0.0698
    # NaN limits in a file leave the robot's in place; a wrong count is refused.
    nan = edited_spec(upper=np.full(7, np.nan))
    np.testing.assert_array_equal(SafetyConfig.for_robot(PANDA, nan, 0.04).upper, PANDA.upper)
    with pytest.raises(ValueError, match="action.lower/upper"):
        SafetyConfig.for_robot(PANDA, edited_spec(lower=np.zeros(3)), 0.04)
    # Other robot, other limits: FR3's joint 6 lower limit is 0.5445.
    assert SafetyConfig.for_robot(FR3, wide, 0.04).lower[5] == pytest.approx(FR3.lower[5])


def test_command_speed_is_capped_from_the_robot_description():
    cfg = SafetyConfig.for_robot(PANDA, policy_io.make_action_spec(), 0.04, max_joint_speed=50.0)
    np.testing.assert_allclose(cfg.max_step, COMMAND_SPEED_FACTOR * PANDA.velocity * 0.04)
    # The shipped sim value (6 rad/s) and the robot value (1 rad/s) are under the cap.
    for speed in (6.0, 1.0):
        cfg = SafetyConfig.for_robot(PANDA, policy_io.make_action_spec(), 0.04, speed)
        np.testing.assert_allclose(cfg.max_step, speed * 0.04)
    with pytest.raises(ValueError, match="max_joint_speed"):
        SafetyConfig.for_robot(PANDA, policy_io.make_action_spec(), 0.04, float("nan"))


@pytest.mark.parametrize(
    ("file_period", "rate", "match"),
    [(1e6, 0.0, "control_period_s"), (1e-6, 0.0, "control_period_s"),
     (float("nan"), 0.0, "control_period_s"), (0.04, 100.0, "control_period_s"),
     (0.04, -1.0, "control_rate")],
)  # fmt: skip
def test_the_control_period_is_the_bridges_own(file_period, rate, match):
    """Issue #20 item 2: a control period of 1e6 s made the rate limit 6e6 rad."""
    with pytest.raises(ValueError, match=match):
        bridge_control_period(file_period, rate)
    assert bridge_control_period(0.04, 0.0) == 0.04
    assert bridge_control_period(0.04, 25.0) == pytest.approx(0.04)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"joint_names": ("panda_joint1",) * 7}, "repeat"),
        ({"joint_names": tuple(reversed(PANDA_JOINT_NAMES))}, "out of order"),
        ({"joint_names": PANDA_JOINT_NAMES[:6]}, "has 6 joints"),
        ({"joint_scale": 50.0}, "joint_scale_rad"),
        ({"joint_scale": float("nan")}, "joint_scale_rad"),
        ({"joint_scale": -0.1}, "joint_scale_rad"),
        ({"upper": np.full(7, np.nan)}, "action.upper"),
        ({"home": np.full(7, 1e6)}, "action.home"),
    ],
    ids=[
        "equal_names",
        "reordered",
        "six_joints",
        "scale_50",
        "scale_nan",
        "scale_negative",
        "nan_limits",
        "home_1e6",
    ],  # fmt: skip
)
def test_action_specs_the_robot_cannot_be_driven_by_are_refused(changes, match):
    with pytest.raises(ValueError, match=match):
        check_action_spec_for_robot(edited_spec(**changes), PANDA, 0.04)


def test_the_shipped_action_specs_pass():
    for mode in policy_io.ACTION_MODES:
        spec = policy_io.make_action_spec(mode, gripper=True)
        assert check_action_spec_for_robot(spec, PANDA, 0.04) == ""
    # bench/ros_loop.py serves the 25 Hz policy at 500 Hz: served, with a warning (the rate
    # limit binds), not refused.
    spec = policy_io.make_action_spec()
    assert "rate limit will bind" in check_action_spec_for_robot(spec, PANDA, 0.002)
    # Another naming scheme (a driver with other names) is taken in the robot's order.
    other = edited_spec(joint_names=tuple(f"joint_a{i}" for i in range(1, 8)))
    check_action_spec_for_robot(other, PANDA, 0.04)
