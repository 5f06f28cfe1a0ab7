"""Safety limits come from the robot side, never from the policy file (issue #20 item 2).

Real exported files have their ``manip_rl.json`` metadata rewritten (``load_policy`` checks the
weights hash, not the limits): +-10 rad joint limits, seven joints all named panda_joint1, a
control period of 1e6 s, ``joint_scale_rad: 50``. Served by ``manip-rl serve`` to a fake arm over
DDS, each file is refused (configure fails and serve exits non-zero naming the field; a
``load_policy`` that refuses the file counts as refused too) or served only within the robot's
real limits. Either way no command outside them is ever produced.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Callable

import numpy as np
import pytest

pytest.importorskip("rclpy")

from test_ros_bridge import (  # noqa: E402
    FakeArm,
    _log,
    reach_policy,  # noqa: F401  (fixture)
    ros_context,  # noqa: F401  (fixture)
    start_bridge,
)

from manip_rl import policy_io  # noqa: E402
from manip_rl.robots import PANDA  # noqa: E402

pytestmark = pytest.mark.ros


def edit_policy_metadata(src: str, dst: str, edit: Callable[[dict], None]) -> dict:
    """Copy policy file ``src`` to ``dst`` with its manip_rl.json metadata changed by ``edit``
    (weights untouched, so their hash still matches). Returns the metadata written."""
    import torch

    from manip_rl.export import METADATA_FILE

    extra = {METADATA_FILE: ""}
    module = torch.jit.load(src, map_location="cpu", _extra_files=extra)
    md = json.loads(extra[METADATA_FILE])
    edit(md)
    torch.jit.save(module, dst, _extra_files={METADATA_FILE: json.dumps(md)})
    with zipfile.ZipFile(dst) as z:  # the edit is in the file
        name = next(n for n in z.namelist() if n.endswith(METADATA_FILE))
        assert json.loads(z.read(name)) == md
    return md


def _wide_limits(md: dict) -> None:
    md["action"]["lower"], md["action"]["upper"] = [-10.0] * 7, [10.0] * 7


def _equal_names(md: dict) -> None:
    md["action"]["joint_names"] = ["panda_joint1"] * 7


def _long_period(md: dict) -> None:
    md["control_period_s"] = 1e6


def _big_scale(md: dict) -> None:
    md["action"]["joint_scale_rad"] = 50.0


# (edit, may be served, words one of which the refusal names)
EDITS = {
    "limits_10rad": (_wide_limits, True, ("lower", "upper", "limit")),
    "seven_panda_joint1": (_equal_names, False, ("joint_names", "panda_joint1")),
    "period_1e6": (_long_period, False, ("control_period",)),
    "joint_scale_50": (_big_scale, False, ("joint_scale",)),
}


def test_the_edit_helper_keeps_the_file_loadable(reach_policy, tmp_path):  # noqa: F811
    """The helper changes only the metadata: an unchanged copy still loads."""
    from manip_rl.export import load_policy

    dst = str(tmp_path / "same.pt")
    md = edit_policy_metadata(reach_policy, dst, lambda md: None)
    assert load_policy(dst).metadata["weights_sha256"] == md["weights_sha256"]


@pytest.mark.parametrize("case", list(EDITS))
def test_an_edited_policy_file_never_widens_the_robots_limits(
    ros_context,  # noqa: F811
    reach_policy,  # noqa: F811
    tmp_path,
    case,
):
    edit, may_serve, words = EDITS[case]
    path = str(tmp_path / f"{case}.pt")
    edit_policy_metadata(reach_policy, path, edit)
    arm = FakeArm(ros_context)
    # The arm 0.04 rad past the policy's own limits: an untrained policy's targets push further.
    arm.position = lambda t: np.concatenate([policy_io.PANDA_JOINT_UPPER + 0.04, [0.04, 0.04]])
    proc = start_bridge(path, tmp_path / "bridge.log")
    try:
        end = time.monotonic() + 60
        active = False
        while proc.poll() is None and time.monotonic() < end and not active:
            # (the log, not get_state: a refusing bridge exits, maybe under a service call)
            active = "active at" in _log(tmp_path)
            arm.spin(0.2)
        log = _log(tmp_path)
        if active:
            assert may_serve, f"{case}: the bridge served an unsafe file:\n{log}"
            assert arm.enable().success, log
            arm.spin(1.5)
            assert len(arm.commands) > 20, log
        else:
            code = proc.wait(30)
            log = _log(tmp_path)
            assert code != 0, f"{case}: neither served nor refused:\n{log}"
            assert "configure failed" in log or "PolicyFileError" in log, log
            assert any(w in log for w in words), (
                f"{case}: the refusal names none of {words}:\n{log}"
            )
            arm.spin(0.3)
        cmds = np.array([c for _, c in arm.commands]).reshape(-1, 7)
        assert (cmds <= PANDA.upper + 1e-9).all() and (cmds >= PANDA.lower - 1e-9).all(), (
            f"{case}: commands outside the robot's limits, max {cmds.max(axis=0)}"
        )
    finally:
        from manip_rl.ros_bridge import dds

        dds.stop_node(proc)
        arm.close()
