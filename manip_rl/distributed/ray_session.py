"""Connecting to Ray: an embedded local instance by default, a cluster by address."""

from __future__ import annotations

import os

INSTALL_HINT = "install the ray extra: `pip install -e .[ray]` (or bash scripts/setup.sh)"


def import_ray():
    """The ``ray`` module, or a SystemExit saying how to install it."""
    try:
        import ray
    except ModuleNotFoundError as e:
        raise SystemExit(f"manip_rl: Ray is not installed ({e.name}); {INSTALL_HINT}") from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at ``address`` (else ``RAY_ADDRESS``), or start an embedded local
    Ray when neither is given. A process already connected (a Tune trial) keeps its connection.
    Returns whether this call started the connection (the caller then shuts it down)."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"log_to_driver": True, "configure_logging": False}
    if address is None:
        # Embedded local Ray: "local" starts a new instance (None would join whatever cluster
        # /tmp/ray/ray_current_cluster names); no dashboard (one less server and port).
        address = "local"
        kwargs.update(include_dashboard=False, num_cpus=num_cpus)
    try:
        ray.init(address=address, **kwargs)
    except ConnectionError as e:
        raise SystemExit(
            f"manip_rl: cannot reach the Ray cluster at {address!r} ({e}); check the head's "
            "address (`ray status` on the head) and the token (docs/distributed.md)"
        ) from None
    return True
