"""Each task's dense reward terms and success test on torch tensors (batched by world).

These are the formulas of the task modules' ``_dense_terms`` (``manip_rl/envs/tasks/*.py``)
written for torch, so they run on the device without a round trip to numpy;
tests/test_warp_terms.py checks each against the CPU env's ``compute_reward`` on random batches,
so a change to a task's reward that is not made here fails there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from manip_rl.envs.tasks import lift, pick_place, push

Terms = dict[str, torch.Tensor]
TermsFn = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Mapping[str, float], float], Terms
]


def _norm(x: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(torch.sum(x * x, dim=-1))


def reach_terms(achieved, desired, ee, grasped, scales, threshold) -> Terms:
    """PandaReach: minus the distance (the base env's default)."""
    return {"goal_distance": -_norm(achieved - desired)}


def push_terms(achieved, desired, ee, grasped, scales, threshold) -> Terms:
    """PandaPush: approach the pushing pose, bring the cube to the goal, success tops up to 1."""
    to_goal = desired[..., :2] - achieved[..., :2]
    norm = _norm(to_goal).unsqueeze(-1)
    pose_xy = achieved[..., :2] - push.PUSH_BEHIND * to_goal / torch.clamp(norm, min=1e-3)
    dxy = ee[..., :2] - pose_xy
    dz = ee[..., 2] - (achieved[..., 2] + push.PUSH_HEIGHT)
    d_pose = torch.sqrt(torch.sum(dxy * dxy, dim=-1) + dz * dz)
    d_goal = _norm(achieved - desired)
    k = push.TANH_SCALE
    approach = scales["approach"] * (1.0 - torch.tanh(k * d_pose)) / 3.0
    place = scales["place"] * (1.0 - torch.tanh(k * d_goal)) / 3.0
    success = torch.where(d_goal < threshold, 1.0 - approach - place, torch.zeros_like(place))
    return {"approach": approach, "place": place, "success": success}


def _grasp_goal(ee, achieved, desired) -> tuple[torch.Tensor, torch.Tensor]:
    rel = ee - achieved
    rel_z = rel[..., 2] - pick_place.GRASP_HEIGHT
    d_grasp = torch.sqrt(torch.sum(rel[..., :2] * rel[..., :2], dim=-1) + rel_z * rel_z)
    return d_grasp, _norm(achieved - desired)


def pick_place_terms(achieved, desired, ee, grasped, scales, threshold) -> Terms:
    """PandaPickPlace: reach the grasping pose, grasp, carry while grasped, success to 1."""
    d_grasp, d_goal = _grasp_goal(ee, achieved, desired)
    k, stages = push.TANH_SCALE, pick_place.STAGES
    reach = scales["reach"] * (1.0 - torch.tanh(k * d_grasp)) / stages
    grasp = scales["grasp"] * grasped / stages
    place = scales["place"] * grasped * (1.0 - torch.tanh(k * d_goal)) / stages
    success = torch.where(d_goal < threshold, 1.0 - reach - grasp - place, torch.zeros_like(place))
    return {"reach": reach, "grasp": grasp, "place": place, "success": success}


def lift_terms(achieved, desired, ee, grasped, scales, threshold) -> Terms:
    """PandaLift: reach the grasping pose, grasp, lift while grasped."""
    d_grasp, d_goal = _grasp_goal(ee, achieved, desired)
    k = push.TANH_SCALE
    return {
        "reach": scales["reach"] * (1.0 - torch.tanh(k * d_grasp)),
        "grasp": scales["grasp"] * grasped,
        "lift": scales["lift"] * grasped * (1.0 - torch.tanh(k * d_goal)),
    }


DENSE_TERMS: dict[str, TermsFn] = {
    "reach": reach_terms,
    "push": push_terms,
    "pick_place": pick_place_terms,
    "lift": lift_terms,
}
HOLD_STEPS = {"lift": lift.HOLD_STEPS}  # tasks whose success asks for a hold of this many steps


def dense_terms(task: str) -> TermsFn:
    """The torch dense terms of a task key; a task without them cannot run batched."""
    try:
        return DENSE_TERMS[task]
    except KeyError:
        raise ValueError(
            f"task {task!r} has no batched (Warp) reward in manip_rl/envs/warp/task_terms.py; "
            f"batched tasks: {sorted(DENSE_TERMS)}"
        ) from None
