"""RayVecEnv's direct channel, actor side, over a loopback socket without a Ray cluster (the
cluster tests are tests/test_ray_rollout.py): what comes back when a step raises or returns
something that cannot be pickled, and that the channel goes on serving afterwards."""

from __future__ import annotations

import secrets
import threading
from multiprocessing.connection import Client, Listener

import numpy as np
import pytest

pytest.importorskip("ray")

from manip_rl.distributed import ray_vec_env  # noqa: E402


class _Group(ray_vec_env.EnvGroup):
    """EnvGroup's channel loop over three made-up steps (no envs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def step(self, actions):
        if actions == "raise":
            raise ValueError("action has shape (99,)")
        if actions == "unpicklable":
            return (lambda: None,)
        return (np.asarray(actions) * 2,)


@pytest.fixture
def channel():
    key = secrets.token_bytes(32)
    listener = Listener(("127.0.0.1", 0), authkey=key)
    threading.Thread(target=_Group()._serve, args=(listener,), daemon=True).start()
    conn = Client(listener.address, authkey=key)
    yield conn
    conn.close()


def test_errors_and_unpicklable_results_come_back_as_errors_and_serving_goes_on(channel):
    channel.send(("step", "raise"))
    ok, err = channel.recv()
    assert not ok and isinstance(err, ValueError) and "(99,)" in str(err)
    channel.send(("step", "unpicklable"))
    ok, err = channel.recv()
    assert not ok and "the step result cannot be pickled" in str(err)
    channel.send(("step", [1.0, 2.0]))
    ok, (value,) = channel.recv()
    assert ok and value.tolist() == [2.0, 4.0]
