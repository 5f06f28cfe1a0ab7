"""ROS-free tests of the FR3 command path: robot profiles and role matching, the trajectory
planner's limits (property-style: random policy outputs, random timing), the joint trajectory
controller-like interpolator, and the emulated Franka reflex."""

from __future__ import annotations

import numpy as np
import pytest

from manip_rl import policy_io
from manip_rl.robots import FR3, PANDA
from manip_rl.robots.franka import SIM_MODEL_LOWER, SIM_MODEL_UPPER
from manip_rl.robots.motion import (
    MotionLimiter,
    MotionLimits,
    hermite_cubic,
    plan_peaks,
    segment_peaks,
)
from manip_rl.robots.reflex import EmulatedArm, TrajectoryInterpolator
from manip_rl.robots.roles import robot_for_policy, tighter_limits
from manip_rl.ros_bridge.safety import OK, SafetyConfig, SafetyFilter

T = 0.04
SERVED = tighter_limits(FR3, PANDA)  # a Panda-trained policy on an FR3
LOWER = np.maximum(SERVED.lower, SIM_MODEL_LOWER)
UPPER = np.minimum(SERVED.upper, SIM_MODEL_UPPER)


def test_datasheet_limits_and_names():
    # Franka's datasheets (robots/franka.py cites them): FR3 joint 6 spans 0.5445..4.5169 rad,
    # the Panda's -0.0175..3.7525; the policy contract uses the Panda's -0.0175, not -0.0865.
    assert FR3.lower[5] == pytest.approx(0.5445) and FR3.upper[5] == pytest.approx(4.5169)
    assert PANDA.lower[5] == pytest.approx(-0.0175) and PANDA.upper[5] == pytest.approx(3.7525)
    assert policy_io.PANDA_JOINT_LOWER[5] == pytest.approx(-0.0175)
    assert policy_io.make_action_spec().lower[5] == pytest.approx(-0.0175)
    assert FR3.velocity.tolist() == [2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26]
    assert FR3.finger_joint_names == ("fr3_finger_joint1", "fr3_finger_joint2")
    assert PANDA.finger_joint_names == ("panda_finger_joint1", "panda_finger_joint2")


def test_a_panda_policy_on_an_fr3_gets_fr3_names_within_both_limit_sets():
    served = robot_for_policy(FR3, PANDA.joint_names, robots=(PANDA, FR3))
    assert served.joint_names == FR3.joint_names
    assert served.finger_joint_names == FR3.finger_joint_names
    assert served.lower[5] == pytest.approx(0.5445)  # the FR3's, tighter
    assert served.upper[5] == pytest.approx(3.7525)  # the Panda's, tighter
    assert served.velocity[0] == pytest.approx(2.175)  # the Panda's 2.175 < the FR3's 2.62
    assert served.velocity[4] == pytest.approx(2.61)
    assert served.acceleration[1] == pytest.approx(7.5) and served.jerk[1] == 3750.0


def test_joint_names_remap_and_its_errors():
    names = [f"arm_j{i}" for i in range(1, 8)] + ["hand_l", "hand_r"]
    served = robot_for_policy(FR3, PANDA.joint_names, names, robots=(PANDA, FR3))
    assert served.joint_names == tuple(names[:7])
    assert served.finger_joint_names == ("hand_l", "hand_r")
    with pytest.raises(ValueError, match="joint_names"):
        robot_for_policy(FR3, PANDA.joint_names, names[:5])
    with pytest.raises(ValueError, match="repeats"):
        robot_for_policy(FR3, PANDA.joint_names, ["a"] * 7)
    scrambled = list(PANDA.joint_names)
    scrambled[0], scrambled[1] = scrambled[1], scrambled[0]
    with pytest.raises(ValueError, match="chain order"):
        robot_for_policy(FR3, scrambled)


def _limiter(**kw) -> MotionLimiter:
    return MotionLimiter(MotionLimits.for_robot(SERVED, T, LOWER + 0.01, UPPER - 0.01, **kw))


def _drive(arm: EmulatedArm, limiter: MotionLimiter, rng, steps: int, delay: float) -> list:
    """Random policy-like targets at 25 Hz with jittered plan times and arrival delays."""
    plans = []
    target = SERVED.home.copy()
    q = arm.advance(0.0)
    for k in range(steps):
        now = 1.0 + k * T + rng.uniform(0, 0.01)
        kind = rng.integers(4)
        if kind == 0:  # a joint_delta policy: measured + up to 0.1 rad
            target = q + rng.uniform(-0.1, 0.1, 7)
        elif kind == 1:
            target = target + rng.uniform(-0.3, 0.3, 7)
        elif kind == 2:  # anywhere in the range: the planner must get there safely
            target = rng.uniform(LOWER, UPPER)
        target = np.clip(target, LOWER + 0.01, UPPER - 0.01)  # the safety filter's clamp
        plan = limiter.plan_step(target, now, SERVED.home)
        plans.append(plan)
        arrival = now + rng.uniform(0, delay)
        q = arm.advance(arrival)
        arm.command_trajectory(arrival, [(plan.t0 + t, p, v) for t, p, v in plan.points()])
    arm.advance(1.0 + steps * T + 3.0)
    return plans


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_policy_outputs_never_exceed_the_limits(seed):
    rng = np.random.default_rng(seed)
    limiter = _limiter()
    lim = limiter.limits
    arm = EmulatedArm(FR3, SERVED.home, t=1.0)
    plans = _drive(arm, limiter, rng, 60, delay=0.015)
    for plan in plans:
        p = plan_peaks(plan)
        assert (p["velocity"] <= lim.velocity * lim.velocity_margin * 1.05 + 1e-9).all()
        assert (p["acceleration"] <= lim.acceleration * lim.acceleration_margin * (1 + 1e-6)).all()
        assert (p["jerk"] <= SERVED.jerk + 1e-6).all()
        assert (p["knot_jump"] < 1e-6).all()  # accelerations continuous across the points
        assert (p["lowest"] >= LOWER - 1e-6).all() and (p["highest"] <= UPPER + 1e-6).all()
        assert np.all(plan.vel[-1] == 0)  # every plan ends at rest
    # The emulated controller sampled all of it at 1 kHz with the reflex armed: no fault.
    assert arm.reflexes == 0, arm.fault


def test_a_new_plan_follows_the_previous_one_for_the_timing_tolerance():
    limiter = _limiter()
    home = SERVED.home
    limiter.plan_step(home, 0.0, home)  # the start plan, a rest
    first = limiter.plan_step(home + 0.2, 0.3, home)
    second = limiter.plan_step(home - 0.2, 0.34, home)
    for t in np.linspace(0.34, 0.34 + limiter.limits.timing_tolerance, 7):
        for a, b in zip(first.state_at(t), second.state_at(t), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-9)


def test_segment_peaks_match_a_dense_sampling():
    rng = np.random.default_rng(3)
    q0, v0, q1, v1 = (rng.uniform(-1, 1, 7) for _ in range(4))
    p = segment_peaks(q0, v0, q1, v1, T)
    c0, c1, c2, c3 = hermite_cubic(q0, v0, q1, v1, T)
    s = np.linspace(0, T, 20001)[:, None]
    q = c0 + c1 * s + c2 * s**2 + c3 * s**3
    v = c1 + 2 * c2 * s + 3 * c3 * s**2
    np.testing.assert_allclose(p["velocity"], np.abs(v).max(0), rtol=1e-6)
    np.testing.assert_allclose(p["lowest"], q.min(0), atol=1e-9)
    np.testing.assert_allclose(p["highest"], q.max(0), atol=1e-9)


def test_interpolator_is_a_cubic_with_velocities_and_linear_without():
    q0 = np.zeros(7)
    interp = TrajectoryInterpolator(q0)
    q1, v1 = np.full(7, 0.1), np.full(7, 0.5)
    assert interp.set_trajectory(0.0, [(0.04, q1, v1)])
    c = hermite_cubic(q0, np.zeros(7), q1, v1, 0.04)
    q, v = interp.sample(0.013)
    np.testing.assert_allclose(q, c[0] + c[1] * 0.013 + c[2] * 0.013**2 + c[3] * 0.013**3)
    np.testing.assert_allclose(interp.sample(0.04)[0], q1)
    np.testing.assert_allclose(interp.sample(1.0)[0], q1)  # holds the last point
    interp.hold(q0)
    assert interp.set_trajectory(0.0, [(0.04, q1, None)])
    np.testing.assert_allclose(interp.sample(0.01)[0], q1 / 4)
    assert not interp.set_trajectory(1.0, [(0.5, q1, None)])  # all in the past: refused


def test_a_trajectory_arriving_after_its_first_point_runs_between_its_own_points():
    """As ros2_controllers' Trajectory::sample: the commanded state is joined to the first point
    only while that point lies ahead; a later arrival samples the message's own spline."""
    q0, q1, q2 = np.zeros(7), np.full(7, 0.1), np.full(7, 0.3)
    v = np.full(7, 2.0)
    points = [(1.0, q1, v), (1.04, q2, np.zeros(7))]
    on_time = TrajectoryInterpolator(q0)
    assert on_time.set_trajectory(0.9, points)
    late = TrajectoryInterpolator(q0)
    assert late.set_trajectory(1.01, points)  # after the first point: no join from q0
    c = hermite_cubic(q1, v, q2, np.zeros(7), 0.04)
    for t in (1.01, 1.02, 1.039):
        s = t - 1.0
        expected = c[0] + c[1] * s + c[2] * s**2 + c[3] * s**3
        np.testing.assert_allclose(late.sample(t)[0], expected, atol=1e-12)
        np.testing.assert_allclose(on_time.sample(t)[0], expected, atol=1e-12)
    assert late.sample(1.01)[0][0] > 0.1  # it jumped from q0 onto the message's spline


def _late_drive(delay_of, steps: int = 150, seed: int = 0) -> EmulatedArm:
    """Plans every 40 ms toward targets that change every 5 steps (a fast policy), each sent to
    the emulated FR3 ``delay_of(k)`` s after its stamp; the arm after all of it."""
    rng = np.random.default_rng(seed)
    limiter = _limiter()
    arm = EmulatedArm(FR3, SERVED.home, t=1.0)
    target = SERVED.home
    for k in range(steps):
        now = 1.0 + k * T
        if k % 5 == 0:
            target = np.clip(SERVED.home + rng.uniform(-0.6, 0.6, 7), LOWER + 0.1, UPPER - 0.1)
        plan = limiter.plan_step(target, now, SERVED.home)
        arrival = now + delay_of(k)
        arm.advance(arrival)
        arm.command_trajectory(arrival, [(plan.t0 + t, p, v) for t, p, v in plan.points()])
    arm.advance(1.0 + steps * T + 2.0)
    return arm


@pytest.mark.parametrize("seed", [0, 1])
def test_plans_arriving_within_the_timing_tolerance_never_trip_the_reflex(seed):
    """The contract between the planner and the controller: a plan that reaches the arm up to
    trajectory_timing_tolerance (20 ms) after its stamp joins the motion exactly. Constant
    delays, random ones, and one that lands just inside the window."""
    tol = _limiter().limits.timing_tolerance
    assert tol == pytest.approx(0.02)
    rng = np.random.default_rng(seed + 10)
    for delay_of in (
        lambda k: 0.0,
        lambda k: 0.0195,
        lambda k: rng.uniform(0, 0.0195),
        lambda k: 0.0195 if k == 40 else 0.001,
    ):
        arm = _late_drive(delay_of, seed=seed)
        assert arm.reflexes == 0, arm.fault


def test_a_plan_arriving_after_the_timing_tolerance_trips_the_reflex():
    """And the other side of it, which the bridge must avoid (it re-plans or drops a plan that
    is late before it is sent): 30 ms late, once, faults the arm, as on the robot."""
    arm = _late_drive(lambda k: 0.03 if k == 40 else 0.001)
    assert arm.reflexes == 1 and "discontinuity" in arm.fault


def test_a_position_step_every_40_ms_trips_the_reflex():
    """What the bridge sent before: 25 Hz position steps, with or without a linear
    trajectory between them. Franka's controller aborts (franka_ros2 #55, #168)."""
    for linear in (False, True):
        arm = EmulatedArm(FR3, FR3.home, t=0.0)
        q = FR3.home.copy()
        for k in range(1, 10):
            q = q + 0.02  # 0.5 rad/s, well inside the velocity limit
            t = k * T
            arm.advance(t)
            if linear:
                arm.command_trajectory(t, [(t + T, q, None)])
            else:
                arm.command_position(q)
        arm.advance(1.0)
        assert arm.reflexes == 1
        kind = "acceleration" if linear else "velocity"
        assert kind in arm.fault, arm.fault


def test_a_violent_command_faults_until_recovery():
    arm = EmulatedArm(FR3, FR3.home, t=0.0)
    far = FR3.home + 0.5
    arm.command_trajectory(0.0, [(0.05, far, np.zeros(7))])  # 0.5 rad in 50 ms
    stopped = arm.advance(0.2)
    assert arm.fault.startswith("joint_motion_generator_") and arm.reflexes == 1
    assert np.abs(stopped - FR3.home).max() < 0.05  # it stopped where the fault happened
    assert not arm.command_trajectory(0.2, [(0.4, FR3.home, np.zeros(7))])
    np.testing.assert_allclose(arm.advance(0.5), stopped)  # refused: it does not move
    arm.recover(0.5)
    assert arm.fault == ""
    gentle = stopped + 0.01
    assert arm.command_trajectory(0.5, [(1.0, gentle, np.zeros(7))])
    np.testing.assert_allclose(arm.advance(1.1), gentle)
    assert arm.reflexes == 1


def test_outside_the_position_limits_faults():
    arm = EmulatedArm(FR3, FR3.home, t=0.0)
    q = FR3.home.copy()
    q[5] = FR3.lower[5] - 0.01  # below 0.5445: fine for a Panda, not for an FR3
    arm.command_trajectory(0.0, [(5.0, q, np.zeros(7))])
    arm.advance(6.0)
    assert "position_limits" in arm.fault and "fr3_joint6" in arm.fault


def test_safety_filter_with_motion_limits_plans_and_restarts_at_enable():
    spec = policy_io.make_action_spec()
    cfg = SafetyConfig.for_robot(SERVED, spec, T, max_joint_speed=6.0, ramp_time=0.2)
    motion = MotionLimits.for_robot(SERVED, T, cfg.lower, cfg.upper)
    safety = SafetyFilter(cfg, motion)
    safety.enable()
    home = SERVED.home
    d = safety.filter(home + 0.05, home, 0.0, None, OK, now=10.0)
    assert d.plan is not None and len(d.plan.points()) == 1  # the start: a rest at measured
    np.testing.assert_allclose(d.plan.pos[-1], home)
    with pytest.raises(ValueError, match="now"):
        safety.filter(home, home, 0.0, None, OK)
    later = safety.filter(home + 0.05, home, 0.0, None, OK, now=10.3)
    assert len(later.plan.points()) > 2 and np.all(later.plan.vel[-1] == 0)
    safety.disable()
    safety.enable()
    again = safety.filter(home + 0.05, home + 0.01, 0.0, None, OK, now=11.0)
    np.testing.assert_allclose(again.plan.pos[-1], home + 0.01)  # from the new measurement


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_batched_ticks_match_the_tick_by_tick_reference(seed):
    """advance()/advance_through() sample and check a command's 1 kHz ticks as arrays; the same
    commands given to advance_tick_by_tick() give the same positions and the same faults,
    gentle plans and violent steps alike (seeds 2 and 3 fault, some within a batch)."""
    rng = np.random.default_rng(seed)
    arms = [EmulatedArm(FR3, SERVED.home, t=1.0) for _ in range(2)]
    limiter = _limiter()
    faults = 0
    for k in range(80):
        now = 1.0 + k * T + rng.uniform(0, 0.01)
        if seed >= 2 and k % 20 == 10:  # a violent trajectory: faults, then a recovery
            points = [(now + 0.03, SERVED.home + rng.uniform(-0.4, 0.4, 7), np.zeros(7))]
        else:
            plan = limiter.plan_step(
                np.clip(SERVED.home + rng.uniform(-0.3, 0.3, 7), LOWER + 0.01, UPPER - 0.01),
                now,
                SERVED.home,
            )
            points = [(plan.t0 + t, p, v) for t, p, v in plan.points()]
        arrival = now + rng.uniform(0, 0.015)
        qa = arms[0].advance(arrival)
        qb = arms[1].advance_tick_by_tick(arrival)
        np.testing.assert_allclose(qa, qb, rtol=0, atol=1e-12)
        assert arms[0].fault == arms[1].fault and arms[0].reflexes == arms[1].reflexes
        if arms[0].fault:
            faults += 1
            for arm in arms:
                arm.recover(arrival)
                limiter = _limiter()
        for arm in arms:
            arm.command_trajectory(arrival, points)
        # The env's substeps: several times at once (advance_through), against one at a time.
        ends = arrival + np.sort(rng.uniform(0, T, 15))
        batch = arms[0].advance_through(ends)
        for row, t in zip(batch, ends, strict=True):
            np.testing.assert_allclose(row, arms[1].advance_tick_by_tick(t), rtol=0, atol=1e-12)
        assert arms[0].fault == arms[1].fault and arms[0].reflexes == arms[1].reflexes
    assert (faults > 0) == (seed >= 2), faults


def test_an_env_on_the_fr3_path_matches_tick_by_tick_and_never_trips_the_reflex():
    """gym.make(..., trajectory_robot="fr3"): the env's substeps take their commanded positions
    from the batched ticks (advance_through); the same episode with every substep advanced tick
    by tick gives the same observations, and random actions never fault the arm."""
    import gymnasium as gym

    import manip_rl  # noqa: F401

    def episode(tick_by_tick: bool) -> tuple[list, int]:
        env = gym.make("manip_rl/PandaPushDense-v0", action_mode="ee_delta",
                       trajectory_robot="fr3")  # fmt: skip
        u = env.unwrapped
        path, asked = u.trajectory_path, []
        batched = path.positions

        def positions(times):
            asked.append(np.array(times))
            if tick_by_tick:
                return np.array([path.arm.advance_tick_by_tick(t) for t in times])
            return batched(times)

        path.positions = positions
        obs, _ = env.reset(seed=3)
        rng = np.random.default_rng(0)
        seen = []
        for _ in range(40):
            obs, _, _, _, info = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
            seen.append(obs["observation"].copy())
            # One call a step: the end of each of its 15 substeps, the last the step's end.
            times = asked.pop()
            dt = u.model.opt.timestep
            assert not asked and len(times) == 15
            np.testing.assert_allclose(np.diff(times), dt, rtol=1e-6)
            assert abs(times[-1] - u.data.time) < 1e-9
        env.close()
        return seen, info["reflexes"]

    batched, reflexes = episode(False)
    reference, _ = episode(True)
    assert reflexes == 0
    for a, b in zip(batched, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("tolerance", [0.0, 0.02, 0.08])
@pytest.mark.parametrize("step", [0.02, 0.05, 0.1])
def test_driving_into_a_joint_limit_stops_at_it(tolerance, step):
    # What a policy does near a joint limit: each step's target is the measured position plus
    # a delta past the limit, clamped to the limit by the safety filter. No plan may cross it
    # (the arm would fault: the reflex's position check), however the speed built up.
    limiter = MotionLimiter(
        MotionLimits.for_robot(SERVED, T, LOWER, UPPER, timing_tolerance=tolerance)
    )
    arm = EmulatedArm(FR3, SERVED.home, t=0.0)
    q = SERVED.home.copy()
    limiter.plan_step(q, 0.0, q)
    for k in range(1, 200):
        now = 0.3 + k * T
        q = arm.advance(now)
        target = q.copy()
        target[3] = max(q[3] - step, LOWER[3])  # joint 4 toward its lower limit
        target[0] = min(q[0] + step, UPPER[0])  # joint 1 toward its upper limit
        plan = limiter.plan_step(target, now, q)
        p = plan_peaks(plan)
        assert p["lowest"][3] >= LOWER[3] - 1e-9, (k, p["lowest"][3] - LOWER[3])
        assert p["highest"][0] <= UPPER[0] + 1e-9, (k, p["highest"][0] - UPPER[0])
        arm.command_trajectory(now, [(plan.t0 + t, pp, v) for t, pp, v in plan.points()])
    arm.advance(0.3 + 200 * T + 2.0)
    assert arm.reflexes == 0, arm.fault
    assert abs(q[3] - LOWER[3]) < 0.02  # it got there (joint 1, 2.7 rad away, is on its way)
    assert q[0] > SERVED.home[0] + 0.8
