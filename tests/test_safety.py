"""The ROS-free safety filter: every layer on its own, and their order."""

from __future__ import annotations

import numpy as np
import pytest

from manip_rl import policy_io
from manip_rl.robots import PANDA
from manip_rl.ros_bridge.safety import (
    DISABLED,
    HOLD_NONFINITE,
    HOLD_STALE,
    NO_STATE,
    OK,
    SafetyConfig,
    SafetyFilter,
)

PERIOD = 0.04
HOME = policy_io.PANDA_HOME


def make_filter(
    max_step: float = 0.1, ramp_time: float = 0.0, timeout: float = 0.1
) -> SafetyFilter:
    spec = policy_io.make_action_spec()
    cfg = SafetyConfig(
        lower=spec.lower,
        upper=spec.upper,
        max_step=max_step,
        control_period=PERIOD,
        ramp_time=ramp_time,
        state_timeout=timeout,
    )
    return SafetyFilter(cfg)


def test_starts_disabled_and_builds_no_command():
    f = make_filter()
    d = f.filter(HOME + 0.01, HOME, state_age=0.0)
    assert d.joints is None and d.status == DISABLED
    f.enable()
    d = f.filter(HOME + 0.01, HOME, state_age=0.0)
    assert d.status == OK
    np.testing.assert_allclose(d.joints, HOME + 0.01)
    f.disable()
    assert f.filter(HOME, HOME, state_age=0.0).joints is None


def test_joint_limit_clamp_is_applied_last():
    f = make_filter(max_step=10.0)
    f.enable()
    upper = f.config.upper
    d = f.filter(upper + 0.5, upper - 0.01, state_age=0.0)
    assert d.clamped
    np.testing.assert_array_less(d.joints, upper + 1e-12)
    np.testing.assert_allclose(d.joints, upper)
    lower = f.config.lower
    d = f.filter(lower - 3.0, lower, state_age=0.0)
    np.testing.assert_allclose(d.joints, lower)


def test_limit_margin_tightens_the_policy_limits():
    spec = policy_io.make_action_spec()
    cfg = SafetyConfig.for_robot(PANDA, spec, PERIOD, max_joint_speed=100.0, limit_margin=0.05)
    np.testing.assert_allclose(cfg.upper, spec.upper - 0.05)
    f = SafetyFilter(cfg)
    f.enable()
    d = f.filter(spec.upper, spec.upper, state_age=0.0)
    np.testing.assert_allclose(d.joints, spec.upper - 0.05)
    with pytest.raises(ValueError, match="joint_limit_margin"):
        SafetyConfig.for_robot(PANDA, spec, PERIOD, limit_margin=-0.1)
    with pytest.raises(ValueError, match="empty"):
        SafetyConfig.for_robot(PANDA, spec, PERIOD, limit_margin=3.0)


def test_rate_limit_from_measured_then_from_last_command():
    f = make_filter(max_step=0.05)
    f.enable()
    d = f.filter(HOME + 1.0, HOME, state_age=0.0)
    assert d.rate_limited
    np.testing.assert_allclose(d.joints, HOME + 0.05)
    # Reference is now the last command, not the (lagging) measured position.
    d = f.filter(HOME + 1.0, HOME, state_age=0.0)
    np.testing.assert_allclose(d.joints, HOME + 0.10)
    d = f.filter(HOME - 1.0, HOME, state_age=0.0)
    np.testing.assert_allclose(d.joints, HOME + 0.05)


def test_ramp_in_grows_the_step_allowance_after_enable():
    f = make_filter(max_step=0.1, ramp_time=4 * PERIOD)
    assert f.config.ramp_steps == 4
    f.enable()
    steps = []
    last = HOME.copy()
    for _ in range(6):
        d = f.filter(HOME + 5.0, HOME, state_age=0.0)
        steps.append(float(np.max(np.abs(d.joints - last))))
        last = d.joints
    np.testing.assert_allclose(steps[:4], [0.025, 0.05, 0.075, 0.1], atol=1e-9)
    np.testing.assert_allclose(steps[4:], [0.1, 0.1], atol=1e-9)
    # Re-enabling restarts the ramp.
    f.disable()
    f.enable()
    d = f.filter(HOME + 5.0, HOME, state_age=0.0)
    np.testing.assert_allclose(d.joints - HOME, 0.025)


def test_stale_state_holds_the_last_command():
    f = make_filter(timeout=0.1)
    f.enable()
    assert f.filter(HOME, HOME, state_age=None).status == NO_STATE
    assert f.filter(HOME, HOME, state_age=0.5).joints is None  # nothing sent yet: nothing to hold
    first = f.filter(HOME + 0.02, HOME, state_age=0.05).joints
    d = f.filter(HOME + 0.09, HOME, state_age=0.11)
    assert d.status == HOLD_STALE and d.holding
    np.testing.assert_array_equal(d.joints, first)
    # Fresh state again: control resumes from the held command.
    d = f.filter(HOME + 0.09, HOME, state_age=0.0)
    assert d.status == OK
    np.testing.assert_allclose(d.joints, HOME + 0.09)


@pytest.mark.parametrize("where", ["targets", "measured", "gripper", "age"])
def test_nonfinite_input_is_never_passed_on(where):
    f = make_filter()
    f.enable()
    good = f.filter(HOME + 0.01, HOME, state_age=0.0, gripper=0.04)
    targets, measured, gripper, age = HOME + 0.05, HOME.copy(), 0.02, 0.0
    if where == "targets":
        targets[3] = np.nan
    elif where == "measured":
        measured[0] = np.inf
    elif where == "gripper":
        gripper = float("nan")
    else:
        age = float("nan")
    d = f.filter(targets, measured, state_age=age, gripper=gripper)
    assert d.holding
    assert d.status in (HOLD_NONFINITE, HOLD_STALE)
    np.testing.assert_array_equal(d.joints, good.joints)
    assert d.gripper == good.gripper
    assert np.isfinite(d.joints).all()


def test_gripper_is_clamped_to_the_hand_range():
    f = make_filter()
    f.enable()
    assert f.filter(HOME, HOME, 0.0, gripper=0.5).gripper == pytest.approx(0.08)
    assert f.filter(HOME, HOME, 0.0, gripper=-0.1).gripper == 0.0


def test_bad_configuration_is_refused_with_the_name():
    spec = policy_io.make_action_spec()
    with pytest.raises(ValueError, match="max_step"):
        SafetyConfig(spec.lower, spec.upper, max_step=0.0, control_period=PERIOD)
    with pytest.raises(ValueError, match="state_timeout"):
        SafetyConfig(spec.lower, spec.upper, 0.1, PERIOD, state_timeout=-1.0)
    with pytest.raises(ValueError, match="finite"):
        SafetyConfig(spec.lower * np.nan, spec.upper, 0.1, PERIOD)
    f = make_filter()
    f.enable()
    with pytest.raises(ValueError, match="targets"):
        f.filter(np.zeros(3), HOME, 0.0)
