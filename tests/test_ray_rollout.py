"""Ray rollout workers (``vec_env: ray``) on a real two-node local Ray cluster, inside a
loopback-only network namespace (tests/ray_netns.py; the body is tests/ray_rollout_body.py,
one cluster for the module)."""

from __future__ import annotations

import pytest
from ray_netns import run_body

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def body(tmp_path_factory) -> dict:
    return run_body("ray_rollout_body.py", str(tmp_path_factory.mktemp("ray_rollout")), 500)


def test_actors_spread_over_both_nodes(body: dict) -> None:
    assert body["nodes"] == 2
    assert body["nodes_used"] == 2


def test_same_transitions_as_dummy_vec_env(body: dict) -> None:
    # Observations, rewards, dones and terminal observations identical step by step, across
    # an automatic reset (60 steps of 50-step episodes, 4 envs), over the default direct
    # channel and with each step a Ray actor call.
    assert body["transport"] == "direct"
    for result in (body, body["ray_calls"]):
        assert result["same_as_dummy"]
        assert result["dones_seen"] >= 4
        assert result["terminal_same"]
    assert body["env_method"] == "manip_rl/PandaReachDense-v0"


def test_direct_channel_admits_only_the_drivers_key(body: dict) -> None:
    assert body["wrong_key"] == "refused"
    assert body["right_key_after_wrong"]


def test_env_error_crosses_the_channel_and_stepping_goes_on(body: dict) -> None:
    err = body["env_error"]
    assert err is not None and "environments 0..1 raised" in err and "(99,)" in err, err
    assert body["steps_after_error"] == 4


def test_killed_actor_is_replaced_without_stopping_training(body: dict) -> None:
    assert body["ppo_timesteps"] >= 600  # learn() ran to the end
    assert body["replacements"] == 1
    assert body["new_pid_differs"]
    # The replaced actor's two envs were reported as cut-short episodes, once each.
    assert body["replaced_infos"] == 2


def test_training_run_on_ray_workers(body: dict) -> None:
    assert body["run_final_steps"] >= 600
    assert body["run_checkpoint"] == body["run_final_steps"]
    assert body["run_evals"] >= 3


def test_ray_traffic_stayed_on_loopback(body: dict) -> None:
    addrs = body["tcp_addresses"]
    assert addrs, "ss saw no TCP sockets while the cluster ran"
    assert all(a in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]") for a in addrs), addrs
