"""The gripper path of policy_bridge: one interface, two backends.

:class:`GripperLogic` (ROS-free, unit-tested) turns the policy's gripper opening (m, every
control step) into discrete open/close decisions with hysteresis: it closes when the opening
falls below ``close_below`` and opens when it rises above ``open_above``, so a policy dithering
around the middle does not chatter the fingers. A goal goes out only when the state changes, plus
a slow keepalive on the topic backend, never a stream at the control rate.

Backends (parameter ``gripper_backend``):

* ``topic``: ``std_msgs/Float64MultiArray`` with one position per finger (half the opening
  each), as a ros2_control forward command controller on the finger joints takes it (it holds
  the last command, so one message per change is enough; ``gripper_keepalive`` re-sends it
  slowly for a controller restarted meanwhile). ``gripper_mode: continuous`` streams the policy's
  opening every step instead, as the training environments command the fingers.
* ``action``: a non-blocking ``control_msgs/GripperCommand`` action client (franka_gripper's
  ``/fr3_gripper/gripper_action``, ros2_controllers' gripper action controller): the goal's
  ``position`` is the width to move to and ``max_effort`` the grasp force. Used when control_msgs
  is importable (``auto``: the action where it is, else the topic).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

OPEN, CLOSED = "open", "closed"
GRIPPER_BACKENDS = ("auto", "topic", "action")
GRIPPER_MODES = ("discrete", "continuous")


@dataclasses.dataclass(frozen=True)
class GripperConfig:
    """``open_width``/``closed_width``: the widths (m) sent for open and closed; ``close_below``
    and ``open_above``: the hysteresis thresholds (m) on the policy's opening; ``force`` (N):
    the grasp force of an action goal; ``keepalive`` (s, 0: none): re-send period of the
    topic backend's state; ``continuous``: stream the opening as is (topic backend only)."""

    open_width: float = 0.08
    closed_width: float = 0.0
    close_below: float = 0.03
    open_above: float = 0.05
    force: float = 20.0
    keepalive: float = 1.0
    continuous: bool = False

    def __post_init__(self) -> None:
        for name in ("open_width", "closed_width", "close_below", "open_above", "keepalive"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"parameter gripper_{name} must be >= 0, got {value!r}")
        if not (math.isfinite(self.force) and self.force > 0):
            raise ValueError(f"parameter gripper_force must be > 0 N, got {self.force!r}")
        if not self.close_below < self.open_above:
            raise ValueError(
                f"gripper_close_below ({self.close_below:g} m) must be below gripper_open_above "
                f"({self.open_above:g} m): the band between them is the hysteresis"
            )
        if not self.closed_width < self.open_width:
            raise ValueError(
                f"gripper_closed_width ({self.closed_width:g} m) must be below "
                f"gripper_open_width ({self.open_width:g} m)"
            )


class GripperLogic:
    """Discrete gripper state from the policy's opening; :meth:`update` says what to send."""

    def __init__(self, config: GripperConfig) -> None:
        self.config = config
        self.state: str | None = None  # None until the first command
        self._sent_at = -math.inf
        self.goals_sent = 0

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    def reset(self) -> None:
        """Forget the state (after a disable): the next command is sent whatever it is."""
        self.state = None
        self._sent_at = -math.inf

    def decide(self, opening: float) -> str:
        """The state the opening ``opening`` (m) asks for, with hysteresis about the current."""
        cfg = self.config
        if opening <= cfg.close_below:
            return CLOSED
        if opening >= cfg.open_above:
            return OPEN
        return self.state or (
            CLOSED if opening < 0.5 * (cfg.close_below + cfg.open_above) else OPEN
        )

    def update(self, opening: float, now: float, keepalive: bool = True) -> float | None:
        """The width (m) to send for this step's opening at ``now`` (s), or None: nothing to send
        (the state did not change and no keepalive is due)."""
        cfg = self.config
        state = self.decide(opening)
        if cfg.continuous:  # every step, as the training environments command the fingers
            self.state = state
            return opening
        due = keepalive and cfg.keepalive > 0 and now - self._sent_at >= cfg.keepalive
        if state == self.state and not due:
            return None
        self.state, self._sent_at = state, now
        self.goals_sent += 1
        return cfg.open_width if state == OPEN else cfg.closed_width


class TopicGripper:
    """The ``topic`` backend: finger positions on a ``Float64MultiArray`` topic."""

    keepalive = True

    def __init__(self, node, topic: str) -> None:
        from std_msgs.msg import Float64MultiArray

        self._msg_type = Float64MultiArray
        self.publisher = node.create_publisher(Float64MultiArray, topic, 10)

    def send(self, width: float, force: float) -> None:
        self.publisher.publish(self._msg_type(data=[width / 2, width / 2]))

    def close(self, node) -> None:
        node.destroy_publisher(self.publisher)


class ActionGripper:
    """The ``action`` backend: ``control_msgs/GripperCommand`` goals, sent without waiting for
    the server's answer (a blocking call in a callback deadlocks a single-threaded executor). A
    goal that finds no server is kept and sent when it appears (checked at the next command)."""

    keepalive = False  # one goal per change: an action server acts on each goal it accepts

    def __init__(self, node, action_name: str, log: Callable[[str], None]) -> None:
        from control_msgs.action import GripperCommand
        from rclpy.action import ActionClient

        self._goal_type = GripperCommand.Goal
        self.client = ActionClient(node, GripperCommand, action_name)
        self.action_name = action_name
        self._log = log
        self._pending: tuple[float, float] | None = None
        self.publisher = None

    def send(self, width: float, force: float) -> None:
        self._pending = (width, force)
        self.flush()

    def flush(self) -> None:
        """Send the pending goal if the server is there (non-blocking)."""
        if self._pending is None:
            return
        if not self.client.server_is_ready():
            self._log(f"gripper action server {self.action_name} is not available")
            return
        width, force = self._pending
        goal = self._goal_type()
        goal.command.position, goal.command.max_effort = float(width), float(force)
        self.client.send_goal_async(goal)
        self._pending = None

    def close(self, node) -> None:
        self.client.destroy()


def action_available() -> bool:
    """Whether control_msgs (the GripperCommand action) can be imported here."""
    try:
        import control_msgs.action  # noqa: F401
    except ImportError:
        return False
    return True


class Gripper:
    """The bridge's gripper: the logic plus one backend (``send(width, force)``)."""

    def __init__(self, config: GripperConfig, backend) -> None:
        self.logic = GripperLogic(config)
        self.backend = backend

    @property
    def closed(self) -> bool:
        return self.logic.closed

    def command(self, opening: float, now: float) -> bool:
        """This step's opening (m) at ``now`` (s); True when something was sent."""
        flush = getattr(self.backend, "flush", None)
        if flush is not None:
            flush()
        width = self.logic.update(opening, now, keepalive=self.backend.keepalive)
        if width is None:
            return False
        self.backend.send(width, self.logic.config.force)
        return True

    def reset(self) -> None:
        self.logic.reset()


def make_gripper(
    node, config: GripperConfig, backend: str, topic: str, action: str, log: Callable[[str], None]
) -> Gripper:
    """The gripper of parameter ``gripper_backend`` (``auto``: the action when control_msgs
    imports, else the topic). ValueError naming the parameter when it cannot be built."""
    if backend == "auto":
        backend = "action" if action_available() else "topic"
    if backend == "action":
        if not action_available():
            raise ValueError(
                "parameter gripper_backend is 'action' but control_msgs is not importable here "
                "(it comes with a ROS 2 install: source it, or use gripper_backend:=topic)"
            )
        if config.continuous:
            raise ValueError(
                "gripper_mode 'continuous' streams the opening every step, which an action "
                "server must not get: use gripper_mode:=discrete with the action backend"
            )
        return Gripper(config, ActionGripper(node, action, log))
    return Gripper(config, TopicGripper(node, topic))
