"""What the robustness sweeps shift: the swept quantities (:data:`QUANTITIES`), a configuration
with some of them fixed (:func:`shift_config`), and shift sets read from YAML, the held-out
dynamics set (``manip_rl/configs/heldout/*.yaml``) by default."""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Mapping, Sequence
from typing import Any

from manip_rl.envs.randomization import (
    CONFIG_DIR,
    RandomizationConfig,
    RandomizationConfigError,
    Range,
    load_config,
)

HELDOUT_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "heldout")
NOMINAL = "nominal"


@dataclasses.dataclass(frozen=True)
class Quantity:
    """One swept quantity: ``physics`` are the randomization keys it scales."""

    name: str
    label: str
    nominal: float
    values: tuple[float, ...]
    physics: tuple[str, ...] = ()
    log_x: bool = True


QUANTITIES: dict[str, Quantity] = {
    q.name: q
    for q in (
        Quantity("mass_scale", "mass (arm links, object) ×", 1.0,
                 (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0), ("link_mass", "object_mass")),
        Quantity("friction_scale", "friction ×", 1.0,
                 (0.25, 0.5, 0.7, 1.0, 1.3, 2.0, 3.0), ("friction",)),
        Quantity("damping_scale", "joint damping ×", 1.0,
                 (0.1, 0.3, 1.0, 3.0, 5.0, 10.0), ("joint_damping",)),
        Quantity("actuator_gain_scale", "actuator gain (servo kp) ×", 1.0,
                 (0.4, 0.5, 0.75, 1.0, 1.5, 2.0), ("actuator_gain",)),
        Quantity("action_latency", "action latency (control steps of 40 ms)", 0,
                 (0, 1, 2, 3, 4), log_x=False),
        Quantity("observation_latency", "observation latency (control steps of 40 ms)", 0,
                 (0, 1, 2, 3, 4), log_x=False),
        Quantity("observation_noise", "sensor noise × the task's default std", 0.0,
                 (0.0, 1.0, 3.0, 10.0, 30.0), log_x=False),
    )
}  # fmt: skip


class RobustnessError(ValueError):
    """Bad input to the sweep; the message says what and what to do."""


# ------------------------------------------------------------------------------------ shifts
def shift_config(task: str, shifts: Mapping[str, float]) -> RandomizationConfig:
    """A configuration with the named quantities fixed at the given values and everything else
    nominal (no noise, no latency, no bias)."""
    physics: dict[str, Range] = {}
    kw: dict[str, Any] = {}
    for name, value in shifts.items():
        if name not in QUANTITIES:
            raise RobustnessError(f"unknown quantity {name!r}; known: {', '.join(QUANTITIES)}")
        q, v = QUANTITIES[name], float(value)
        if q.physics:
            if v <= 0:
                raise RobustnessError(f"{name}={v}: a scale factor must be > 0")
            for key in q.physics:
                physics[key] = Range("uniform", "scale", low=v, high=v)
        elif name in ("action_latency", "observation_latency"):
            if v < 0 or v != int(v) or v > 10:
                raise RobustnessError(f"{name}={v}: whole control steps from 0 to 10")
            kw[name] = (int(v), int(v))
        else:
            if v < 0:
                raise RobustnessError(f"{name}={v}: a noise multiplier cannot be negative")
            ref = _default_config(task)
            noise = dict(ref.observation_noise) if ref is not None else {}
            kw["observation_noise"] = {k: std * v for k, std in noise.items()}
    return RandomizationConfig(physics=physics, **kw)


def _default_config(task: str) -> RandomizationConfig | None:
    return load_config(os.path.join(CONFIG_DIR, f"{task}.yaml"), task)


def training_range(task: str, quantity: str) -> tuple[float, float] | None:
    """The hand-set default training range of a quantity (what the plot shades)."""
    cfg = _default_config(task)
    if cfg is None:
        return None
    q = QUANTITIES[quantity]
    if q.physics:
        r = cfg.physics.get(q.physics[0])
        return None if r is None else r.bounds()
    if quantity in ("action_latency", "observation_latency"):
        return tuple(float(x) for x in getattr(cfg, quantity))
    return (0.0, 1.0) if cfg.observation_noise else None


def load_shift_sets(paths: Sequence[str], task: str) -> dict[str, RandomizationConfig]:
    """Shift sets by name (file stem) from YAML files or directories of them."""
    files: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            files.extend(sorted(glob.glob(os.path.join(p, "*.yaml"))))
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise RobustnessError(
                f"shift set {p!r} does not exist; pass a randomization YAML file or a directory "
                f"of them (the held-out set is {HELDOUT_DIR})"
            )
    out = {}
    for f in files:
        try:
            out[os.path.splitext(os.path.basename(f))[0]] = load_config(f, task)
        except RandomizationConfigError as e:
            raise RobustnessError(str(e)) from None
    return out


def heldout_sets(task: str) -> dict[str, RandomizationConfig]:
    """The held-out dynamics set (docs/transfer.md): never used by a training config."""
    return load_shift_sets([HELDOUT_DIR], task)
