"""Operator safety (issue #16, item 6) and the gripper's decision logic (item 4), ROS-free.

The workspace check runs on the real SafetyFilter and the real forward kinematics (MuJoCo). The
gripper's action backend is reached here only through a recording stand-in for its transport:
control_msgs has no wheel on PyPI, so the action client itself is not exercised over DDS.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from manip_rl import policy_io
from manip_rl.robots import FR3, PANDA
from manip_rl.robots.kinematics import Kinematics
from manip_rl.ros_bridge import guard_params
from manip_rl.ros_bridge.gripper import (
    CLOSED,
    OPEN,
    Gripper,
    GripperConfig,
    GripperLogic,
)
from manip_rl.ros_bridge.operator_safety import (
    LAPSE_HEARTBEAT,
    LAPSE_RUN_TIME,
    OperatorConfig,
    OperatorGuard,
    heartbeat_required,
    restore,
    snapshot,
)
from manip_rl.ros_bridge.safety import SafetyConfig, SafetyFilter


def test_heartbeat_is_required_by_default_for_the_fr3_only():
    assert heartbeat_required("auto", FR3.name) and not heartbeat_required("auto", PANDA.name)
    assert heartbeat_required("required", PANDA.name)
    assert not heartbeat_required("off", FR3.name)
    with pytest.raises(ValueError, match="'heartbeat'"):
        heartbeat_required("yes", FR3.name)
    cfg = guard_params.operator_config(guard_params.PARAMETERS.__getitem__, FR3)
    assert cfg.heartbeat_required


def test_without_heartbeats_enabling_is_refused_and_a_missing_one_lapses_the_enable():
    g = OperatorGuard(OperatorConfig(heartbeat_required=True, heartbeat_timeout=0.5))
    assert "no heartbeat" in g.enable_problem(1.0) and "none received" in g.enable_problem(1.0)
    g.heartbeat(1.0)
    assert g.enable_problem(1.2) == ""
    g.enabled(1.2)
    assert g.lapse(1.4) == ""
    assert g.lapse(1.51) == LAPSE_HEARTBEAT and "heartbeat_timeout" in g.detail
    g.heartbeat(1.6, alive=False)  # the operator lets go of the dead-man switch
    assert g.lapse(1.6) == LAPSE_HEARTBEAT and "released" in g.detail


def test_the_run_time_limit_lapses_the_enable():
    g = OperatorGuard(OperatorConfig(run_time_limit=2.0))
    assert g.enable_problem(0.0) == ""  # no heartbeat required
    g.enabled(10.0)
    assert g.lapse(11.9) == ""
    assert g.lapse(12.01) == LAPSE_RUN_TIME and "run_time_limit 2 s" in g.detail
    g.disabled()
    assert g.lapse(100.0) == ""


def test_bad_operator_parameters_name_the_parameter():
    with pytest.raises(ValueError, match="workspace_min"):
        OperatorConfig(workspace_min=(0.5, 0, 0), workspace_max=(0.4, 1, 1))
    with pytest.raises(ValueError, match="heartbeat_timeout"):
        OperatorConfig(heartbeat_timeout=0.0)
    with pytest.raises(ValueError, match="run_time_limit"):
        OperatorConfig(run_time_limit=-1.0)


def test_a_command_leaving_the_workspace_is_held_and_the_filter_forgets_it():
    """The workspace check after the filter, as the bridge runs it: FK of the filtered joints;
    outside: restore the filter and send its hold (the last command sent)."""
    spec = policy_io.make_action_spec()
    sf = SafetyFilter(SafetyConfig.for_robot(PANDA, spec, 0.04, max_joint_speed=1.0, ramp_time=0))
    kin = Kinematics()
    home = np.asarray(PANDA.home, dtype=np.float64)
    tcp_home = kin.ee_pos(home)
    # A box 5 mm about the home TCP.
    guard = OperatorGuard(
        OperatorConfig(workspace_min=tcp_home - 0.005, workspace_max=tcp_home + 0.005)
    )
    sf.enable()
    first = sf.filter(home, home, 0.0)
    assert guard.outside_workspace(kin.ee_pos(first.joints)) == ""
    # Joint 1 turns the TCP sideways (y) by about 1.2 cm in one step's allowance.
    target = home + np.array([0.04, 0, 0, 0, 0, 0, 0])
    saved = snapshot(sf)
    d = sf.filter(target, home, 0.0)
    outside = guard.outside_workspace(kin.ee_pos(d.joints))
    assert "y outside the workspace" in outside and "not sent" in outside
    restore(sf, saved)
    held = sf.hold("hold_outside_workspace")
    np.testing.assert_array_equal(held.joints, first.joints)
    # The next command is bounded against the last one *sent*, as if the step never ran.
    np.testing.assert_array_equal(sf.last_command, first.joints)
    back = sf.filter(home + np.array([0.5, 0, 0, 0, 0, 0, 0]), home, 0.0)
    np.testing.assert_allclose(back.joints - first.joints, [0.04, 0, 0, 0, 0, 0, 0], atol=1e-12)


def test_workspace_defaults_contain_the_home_pose_of_both_profiles():
    for robot in (PANDA, FR3):
        cfg = guard_params.operator_config(guard_params.PARAMETERS.__getitem__, robot)
        assert OperatorGuard(cfg).outside_workspace(Kinematics(robot).ee_pos(robot.home)) == ""


# ---------------------------------------------------------------------- gripper decision logic


def test_gripper_hysteresis_sends_only_on_a_change_of_state():
    logic = GripperLogic(GripperConfig(close_below=0.03, open_above=0.05, keepalive=0.0))
    assert logic.update(0.08, 0.0) == 0.08 and logic.state == OPEN
    sent = [logic.update(x, 0.04 * i) for i, x in enumerate([0.07, 0.045, 0.035, 0.04, 0.031])]
    assert sent == [None] * 5, "a dithering opening inside the band must not chatter"
    assert logic.update(0.02, 1.0) == 0.0 and logic.state == CLOSED
    assert [logic.update(x, 1.1) for x in (0.01, 0.04, 0.049)] == [None] * 3
    assert logic.update(0.06, 1.2) == 0.08
    assert logic.goals_sent == 3


def test_gripper_topic_keepalive_is_slow_and_continuous_mode_streams():
    logic = GripperLogic(GripperConfig(keepalive=1.0))
    sends = [logic.update(0.08, 0.04 * i) for i in range(50)]  # 2 s at 25 Hz
    assert sum(s is not None for s in sends) == 2  # the first, and one keepalive after 1 s
    stream = GripperLogic(GripperConfig(continuous=True))
    assert stream.update(0.037, 0.0) == 0.037 and stream.update(0.036, 0.04) == 0.036
    assert stream.update(0.01, 0.08) == 0.01 and stream.closed


class RecordingTransport:
    """Stands in for the GripperCommand action client's transport: records goals."""

    keepalive = False

    def __init__(self) -> None:
        self.goals: list[tuple[float, float]] = []

    def send(self, width: float, force: float) -> None:
        self.goals.append((width, force))


def test_gripper_action_decisions_one_goal_per_change_with_width_and_force():
    transport = RecordingTransport()
    g = Gripper(GripperConfig(force=30.0, open_width=0.08, closed_width=0.0), transport)
    for i in range(75):  # 3 s at 25 Hz: open 1 s, close 1 s, open 1 s
        g.command(0.08 if i < 25 or i >= 50 else 0.0, 0.04 * i)
    assert transport.goals == [(0.08, 30.0), (0.0, 30.0), (0.08, 30.0)]
    g.reset()
    g.command(0.08, 10.0)
    assert transport.goals[-1] == (0.08, 30.0) and len(transport.goals) == 4


def test_bad_gripper_parameters_name_the_parameter():
    with pytest.raises(ValueError, match="gripper_close_below"):
        GripperConfig(close_below=0.05, open_above=0.03)
    with pytest.raises(ValueError, match="gripper_force"):
        GripperConfig(force=math.nan)
