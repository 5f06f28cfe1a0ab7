"""Robot descriptions: joint names, limits (position, velocity, acceleration, jerk), home pose,
TCP and kinematics, one description per arm. Importing this package needs numpy only."""

from __future__ import annotations

from manip_rl.robots.description import RobotDescription
from manip_rl.robots.franka import FR3, PANDA

ROBOTS: dict[str, RobotDescription] = {r.name: r for r in (PANDA, FR3)}


def get_robot(name: str) -> RobotDescription:
    """The description named ``name`` (``panda`` or ``fr3``)."""
    try:
        return ROBOTS[name]
    except KeyError:
        raise ValueError(f"robot {name!r} is unknown: use one of {sorted(ROBOTS)}") from None


__all__ = ["FR3", "PANDA", "ROBOTS", "RobotDescription", "get_robot"]
