"""policy_bridge's control step, ROS-free, with an injected clock (issue #16): ages by stamp on
one clock, perception holds, the heartbeat and run time lapses, the workspace hold. The policy
is the shipped PandaPush file (real TorchScript), the filter and kinematics the real ones."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from manip_rl.export.policy_file import load_policy  # noqa: E402
from manip_rl.robots import PANDA  # noqa: E402
from manip_rl.ros_bridge import bridge_params, dds, guard_params  # noqa: E402
from manip_rl.ros_bridge.control_core import ControlCore  # noqa: E402
from manip_rl.ros_bridge.operator_safety import (  # noqa: E402
    HOLD_WORKSPACE,
    OperatorConfig,
    OperatorGuard,
)
from manip_rl.ros_bridge.perception import (  # noqa: E402
    HOLD_PERCEPTION_JUMP,
    HOLD_STALE_PERCEPTION,
    HOLD_WRONG_FRAME,
    InputGuard,
)
from manip_rl.ros_bridge.plausibility import StateCheck  # noqa: E402
from manip_rl.ros_bridge.runner import PolicyRunner  # noqa: E402
from manip_rl.ros_bridge.safety import HOLD_STALE, OK, SafetyFilter  # noqa: E402

NAMES = [*PANDA.joint_names, *PANDA.finger_joint_names]
Q = np.concatenate([PANDA.home, [0.02, 0.02]])
BASE = "panda_link0"
T0 = 1000.0  # s on the injected clock (any clock: sim time or wall time alike)


@pytest.fixture(scope="module")
def push_policy():
    return load_policy(str(dds.PRETRAINED_DIR / "panda_push.pt"))


def make_core(policy, operator: OperatorConfig | None = None, **params) -> ControlCore:
    p = dict(guard_params.PARAMETERS, **bridge_params.PARAMETERS, **params)
    get = p.__getitem__
    runner = PolicyRunner(policy)
    safety = SafetyFilter(bridge_params.safety_config(get, PANDA, policy.action_spec, 0.04))
    check = StateCheck(guard_params.plausibility_config(get, PANDA), runner.joint_map)
    goal_cfg, obj_cfg = guard_params.perception_configs(get, PANDA)
    op = OperatorGuard(operator or guard_params.operator_config(get, PANDA))
    return ControlCore(
        runner, safety, check, InputGuard("goal", goal_cfg), InputGuard("object pose", obj_cfg), op
    )


def feed(core: ControlCore, now: float, stamp: float | None = None, frame: str = BASE, obj=None):
    stamp = now if stamp is None else stamp
    core.joint_state(NAMES, Q, np.zeros(9), stamp, now, active=True)
    core.offer(core.goal, stamp, frame, (0.6, 0.1, 0.02), None, now)
    core.offer(core.obj, stamp, frame, obj or (0.5, 0.0, 0.02), (1.0, 0, 0, 0), now)


def test_a_fresh_step_commands_and_a_state_stale_by_its_stamp_holds(push_policy):
    core = make_core(push_policy)
    feed(core, T0)
    core.enable(T0)
    decision, step, age = core.step(T0 + 0.01)
    assert decision is not None and decision.status == OK and step is not None
    assert age == pytest.approx(0.01)
    # The same messages, stamped 0.2 s before they arrive: too old by stamp (state_timeout 0.1).
    feed(core, T0 + 0.5, stamp=T0 + 0.3)
    decision, step, _ = core.step(T0 + 0.5)
    assert decision.status == HOLD_STALE and step is None


def test_a_wrong_frame_or_jumping_object_pose_holds_and_a_stale_one_too(push_policy):
    core = make_core(push_policy)
    feed(core, T0)
    core.enable(T0)
    assert core.step(T0)[0].status == OK
    feed(core, T0 + 0.04, frame="camera_link")
    assert core.step(T0 + 0.04)[0].status == HOLD_WRONG_FRAME
    assert core.counters["rejected_wrong_frame"] == 2  # goal and object pose
    feed(core, T0 + 0.08)
    assert core.step(T0 + 0.08)[0].status == OK
    feed(core, T0 + 0.12, obj=(0.5, 0.4, 0.02))  # 0.4 m in 40 ms
    assert core.step(T0 + 0.12)[0].status == HOLD_PERCEPTION_JUMP
    # Joint states go on, perception stops: the object pose ages out (0.2 s) and holds.
    core.joint_state(NAMES, Q, np.zeros(9), T0 + 0.5, T0 + 0.5, active=True)
    core.obj.problem = ""  # (the jump verdict aside)
    assert core.step(T0 + 0.5)[0].status == HOLD_STALE_PERCEPTION


def test_the_heartbeat_and_the_run_time_limit_lapse_the_enable(push_policy):
    core = make_core(push_policy, OperatorConfig(heartbeat_required=True, run_time_limit=1.0))
    feed(core, T0)
    assert "no heartbeat" in core.enable_refusal(T0)
    core.operator.heartbeat(T0)
    assert core.enable_refusal(T0) == ""
    core.enable(T0)
    assert core.step(T0 + 0.05)[0].status == OK
    decision, _, _ = core.step(T0 + 0.6)  # no heartbeat for 0.6 s > 0.5 s
    assert decision is None and not core.safety.enabled
    assert core.counters["lapsed_heartbeat_lapsed"] == 1 and "heartbeat" in core.lapse_detail
    core.operator.heartbeat(T0 + 0.7)
    core.enable(T0 + 0.7)
    for k in range(1, 12):  # heartbeats at 10 Hz, states fresh: the run limit ends it at 1 s
        core.operator.heartbeat(T0 + 0.7 + 0.1 * k)
        feed(core, T0 + 0.7 + 0.1 * k)
        core.step(T0 + 0.7 + 0.1 * k)
    assert not core.safety.enabled and core.counters["lapsed_run_time_limit"] == 1


def test_a_command_leaving_the_workspace_box_is_not_sent(push_policy):
    from manip_rl.robots.kinematics import Kinematics

    tcp = Kinematics().ee_pos(PANDA.home)
    box = OperatorConfig(workspace_min=tcp - 1e-4, workspace_max=tcp + 1e-4)
    core = make_core(push_policy, box)
    feed(core, T0)
    core.enable(T0)
    for k in range(10):
        feed(core, T0 + 0.04 * k)
        decision, _, _ = core.step(T0 + 0.04 * k)
        # Nothing was sent before, so the hold has no command to repeat: nothing goes out.
        assert decision is None and core.status == HOLD_WORKSPACE
    assert core.counters["rejected_outside_workspace"] == 10


def test_a_grasped_cubes_last_pose_is_used_while_occluded_and_only_while_grasped(push_policy):
    from manip_rl.ros_bridge.gripper import Gripper, GripperConfig

    class Recording:
        keepalive = False
        goals: list = []

        def send(self, width, force):
            self.goals.append(width)

    core = make_core(push_policy)
    core.gripper = Gripper(GripperConfig(), Recording())
    feed(core, T0)
    core.enable(T0)
    core.gripper.command(0.0, T0)  # the policy closed the gripper
    assert core.gripper.closed

    def step_with_fingers(opening: float, t: float) -> str:
        q = Q.copy()
        q[7:] = opening / 2
        core.joint_state(NAMES, q, np.zeros(9), t, t, active=True)
        core.goal.offer(t, BASE, (0.6, 0.1, 0.02), None, t)  # the goal goes on, the cube not
        core.gripper.logic.state = "closed"  # (whatever the policy's last step asked for)
        core.step(t)
        return core.status

    # Fingers stopped 4 cm apart on the cube: its last pose (0.5 s old) is used.
    assert step_with_fingers(0.04, T0 + 0.5) == OK
    assert core.counters["occluded_object_steps"] == 1
    # Fingers still open (8 cm) or shut (0): no grasp, the old pose holds.
    assert step_with_fingers(0.08, T0 + 0.54) == HOLD_STALE_PERCEPTION
    assert step_with_fingers(0.0, T0 + 0.58) == HOLD_STALE_PERCEPTION
    # Grasped, but past object_occluded_hold (1 s): hold.
    assert step_with_fingers(0.04, T0 + 1.1) == HOLD_STALE_PERCEPTION


class SteppedClock:
    """A plan clock that advances by ``gaps`` between reads (then by 0.1 ms): a process
    descheduled between planning and sending, deterministically."""

    def __init__(self, start: float, gaps: list[float]) -> None:
        self.t, self.gaps = start, list(gaps)

    def __call__(self) -> float:
        now = self.t
        self.t += self.gaps.pop(0) if self.gaps else 1e-4
        return now


def make_fr3_core(policy) -> ControlCore:
    from manip_rl.robots import FR3
    from manip_rl.ros_bridge import profiles

    p = {
        **guard_params.PARAMETERS,
        **bridge_params.PARAMETERS,
        "robot": "fr3",
        "output": "trajectory",
    }
    robot = profiles.serving_robot(p.__getitem__, FR3, policy.action_spec)
    get = profiles.with_profile(p.__getitem__, robot)
    runner = PolicyRunner(policy, robot=robot)
    cfg = bridge_params.safety_config(get, robot, policy.action_spec, 0.04)
    safety = SafetyFilter(cfg, profiles.motion_limits(get, robot, cfg.lower, cfg.upper, 0.04))
    names = [*robot.joint_names, *robot.finger_joint_names]
    check = StateCheck(guard_params.plausibility_config(get, robot), runner.joint_map)
    goal_cfg, obj_cfg = guard_params.perception_configs(get, robot)
    op = OperatorGuard(OperatorConfig())  # no heartbeat here: the clock is the subject
    core = ControlCore(
        runner, safety, check, InputGuard("goal", goal_cfg), InputGuard("object pose", obj_cfg), op
    )
    return core, names, robot.home, guard_params.base_frame(get, robot)


def test_a_plan_late_before_it_is_sent_is_replanned_and_twice_late_is_not_sent(push_policy):
    """With the trajectory output a plan must reach the controller within the timing tolerance
    of its stamp. One found more than a quarter of it old once done is planned again from the
    current time; if that one is late too, nothing is sent (the previous plan goes on to rest)."""
    core, names, home, frame = make_fr3_core(push_policy)
    tol = core.safety.motion.timing_tolerance
    logged = []
    core.log = lambda kind, message: logged.append((kind, message))
    q = np.concatenate([home, [0.02, 0.02]])

    def feed_fr3(now):
        core.joint_state(names, q, np.zeros(9), now, now, active=True)
        core.offer(core.goal, now, frame, (0.6, 0.1, 0.02), None, now)
        core.offer(core.obj, now, frame, (0.5, 0.0, 0.02), (1.0, 0, 0, 0), now)

    t = T0
    feed_fr3(t)
    core.enable(t)
    for _ in range(8):  # past the start plan (a rest, re-sent unchanged for start_time)
        t += 0.04
        feed_fr3(t)
        decision, _, _ = core.step(t, plan_clock=SteppedClock(t, []))
        assert decision is not None and decision.plan is not None
    assert core.counters["late_plans"] == 0
    # Descheduled for 3/4 of the tolerance while planning: planned again, from the later time.
    t += 0.04
    feed_fr3(t)
    decision, _, _ = core.step(t, plan_clock=SteppedClock(t, [0.75 * tol]))
    assert core.counters["late_plans"] == 1 and core.counters["late_plans_dropped"] == 0
    assert decision is not None and decision.plan.t0 == pytest.approx(t + 1e-4 + 0.75 * tol)
    # Late twice in a row: nothing is sent and the limiter keeps the plan it had.
    previous = core.safety._limiter.plan
    t += 0.04
    feed_fr3(t)
    decision, _, _ = core.step(t, plan_clock=SteppedClock(t, [tol, 1e-4, tol]))
    assert decision is None and core.status == "late plan: not sent"
    assert core.counters["late_plans"] == 3 and core.counters["late_plans_dropped"] == 1
    kept = core.safety._limiter.plan
    assert kept.t0 == previous.t0 and np.array_equal(kept.pos, previous.pos)
    assert logged and logged[-1][0] == "late-plan" and "not sending" in logged[-1][1]
    # Late at the write (the node's check, after the message is built): taken back.
    t += 0.04
    feed_fr3(t)
    decision, _, _ = core.step(t, plan_clock=SteppedClock(t, []))
    assert decision is not None and core.safety._limiter.plan is decision.plan
    core.take_back(0.012)
    kept = core.safety._limiter.plan
    assert kept.t0 == previous.t0 and np.array_equal(kept.pos, previous.pos)
    assert core.counters["late_plans_dropped"] == 2 and "12.0 ms old" in logged[-1][1]
    # On time again: sent, and it follows the plan the arm is still running.
    t += 0.04
    feed_fr3(t)
    decision, _, _ = core.step(t, plan_clock=SteppedClock(t, []))
    assert decision is not None and decision.plan is not None
    for a, b in zip(previous.state_at(t + 0.01), decision.plan.state_at(t + 0.01), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)
