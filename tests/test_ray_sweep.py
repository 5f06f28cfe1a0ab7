"""``manip-rl sweep`` on a real two-node local Ray cluster, inside a loopback-only network
namespace (tests/ray_netns.py; the body is tests/ray_sweep_body.py, one cluster for the
module), plus the argument checks, which need no Ray."""

from __future__ import annotations

import argparse
import math

import pytest
from ray_netns import run_body

from manip_rl.distributed import sweep, sweep_report

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def body(tmp_path_factory) -> dict:
    return run_body("ray_sweep_body.py", str(tmp_path_factory.mktemp("ray_sweep")), 580, "grid")


def test_two_trial_sweep_runs_every_trial_to_the_end(body: dict) -> None:
    assert body["grid_rc"] == 0
    assert body["grid_trials"] == 2
    assert body["grid_seeds"] == [0, 1]
    assert body["grid_final_steps"] == [800, 800]
    # One CPU per node and one per trial: the two trials started on the two nodes.
    assert body["first_attempt_nodes"] == 2


def test_killed_trial_worker_resumes_from_its_checkpoint(body: dict) -> None:
    assert body["killed_attempts"] == 2
    assert body["killed_resumed_from"] >= 200
    assert body["killed_resumed_from"] >= body["killed_steps_at_kill"]


def test_summary_table_and_plot(body: dict) -> None:
    (row,) = body["summary_rows"]
    assert row["seeds"] == 2 and row["evaluated"] == 2 and row["steps"] == 800
    assert row["reached"] == 2  # level 0.0: reached at the first evaluation
    assert "| (base) | 2 | 800 |" in body["summary_md"]
    assert body["plot_bytes"] > 5000


@pytest.mark.slow  # its own cluster and two more sweep start-ups: about 2 minutes
def test_interrupted_search_continues_with_resume(tmp_path) -> None:
    body = run_body("ray_sweep_body.py", str(tmp_path), 580, "search")
    assert 200 <= body["interrupted_at"] < 800
    assert body["resume_rc"] == 0
    assert body["search_final_steps"] == 800
    assert body["search_trials"] == 1
    # The resumed attempt started from the interrupted one's checkpoint, not from zero.
    assert body["search_attempts"][0] == 0 and body["search_attempts"][-1] >= 200
    lr = body["search_params"]["hyperparams.learning_rate"]
    assert 1e-4 <= lr <= 1e-3 and body["search_params"]["seed"] == 3


def test_ray_traffic_stayed_on_loopback(body: dict) -> None:
    addrs = body["tcp_addresses"]
    assert addrs, "ss saw no TCP sockets while the sweep ran"
    assert all(a in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]") for a in addrs), addrs


# ------------------------------------------------------------------ no Ray needed
def _args(**over) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    sweep.add_arguments(p)
    ns = p.parse_args([])
    for k, v in over.items():
        setattr(ns, k, v)
    return ns


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"seeds": "a,b"}, "--seeds 'a,b'"),
        ({"seeds": "0,0"}, "distinct seeds"),
        ({"grid": ["hyperparams.learning_rat=1e-4"]}, "hyperparams.learning_rat"),
        ({"grid": ["seed=1,2"]}, "seeds go in --seeds"),
        ({"grid": ["n_envs=0,2"]}, "n_envs"),
        ({"search": ["hyperparams.learning_rate=normal:1:2"]}, "distribution must be one of"),
        ({"search": ["hyperparams.learning_rate=loguniform:0:1e-3"]}, "LO > 0"),
        ({"search": ["hyperparams.gamma=uniform:0.9:0.99"], "seeds": "0,1"}, "one seed"),
        ({"n_seeds": 0}, "--n-seeds 0"),
        ({"grid": ["n_envs=2"], "search": ["hyperparams.gamma=uniform:0.9:0.99"]}, "use one"),
        ({"metric": "success"}, "--metric 'success'"),
        ({"overrides": ["eval.freq=0"]}, "eval.freq is 0"),
        ({"grid": ["eval.freq=0,1000"]}, "eval.freq is 0"),
        ({"overrides": ["vec_env=ray"]}, "vec_env ray inside a sweep trial"),
    ],
)
def test_bad_sweep_arguments_are_refused_naming_them(tmp_path, over: dict, needle: str) -> None:
    with pytest.raises((sweep.SweepError, sweep.cfgmod.ConfigError)) as e:
        sweep.make_spec(_args(**over), str(tmp_path / "s"))
    assert needle in str(e.value)


def test_resume_of_a_directory_that_is_no_sweep_is_refused(tmp_path) -> None:
    with pytest.raises(sweep.SweepError, match="is not a sweep directory"):
        sweep.load_spec(str(tmp_path))


def test_mean_interval_across_seeds() -> None:
    m, lo, hi = sweep_report.mean_interval([0.5, 0.7, 0.9])
    # mean 0.7, sd 0.2, t(2) = 4.303: half-width 4.303 * 0.2 / sqrt(3)
    assert m == pytest.approx(0.7)
    assert hi - m == pytest.approx(4.303 * 0.2 / math.sqrt(3), rel=1e-6)
    assert m - lo == pytest.approx(hi - m)
    assert all(math.isnan(x) for x in sweep_report.mean_interval([0.4])[1:])
