"""manip_rl imports, makes and steps every env, loads a policy and runs commands that do not render
without OSMesa, EGL or a display, and loads no OpenGL library doing so (issue #15, item 5)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.gl_isolation import (
    can_hide_gl_libraries,
    gl_env,
    loaded_gl_libraries_snippet,
    run_python,
    run_python_without_gl,
)

PRETRAINED = Path(__file__).resolve().parents[1] / "manip_rl" / "policies" / "pretrained"

# Everything a non-rendering user does: import, each env made, reset and stepped, a policy loaded
# and asked for an action. Prints the OpenGL libraries mapped into the process afterwards.
NO_RENDER_WORK = (
    loaded_gl_libraries_snippet()
    + f"""
import json, os
import gymnasium as gym
import numpy as np
import manip_rl
from manip_rl.envs import env_ids
from manip_rl.export import load_policy

after_import = gl_libs()
for env_id in env_ids():
    env = gym.make(env_id, randomization="default")
    env.reset(seed=0)
    for _ in range(3):
        env.step(env.action_space.sample())
    env.close()
policy = load_policy({str(PRETRAINED / "panda_reach.pt")!r})
action = policy.act(np.zeros(policy.obs_dim, dtype=np.float32))
print(json.dumps({{"after_import": after_import, "after_all": gl_libs(),
                  "n_envs": len(env_ids()), "action_finite": bool(np.isfinite(action).all()),
                  "mujoco_gl": os.environ.get("MUJOCO_GL")}}))
"""
)


def _last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_import_envs_and_policy_loading_load_no_opengl_library():
    """The old package set MUJOCO_GL=osmesa at import, so `import mujoco` mapped libOSMesa."""
    r = run_python(NO_RENDER_WORK, gl_env())
    assert r.returncode == 0, r.stderr[-3000:]
    out = _last_json(r.stdout)
    assert out["after_import"] == [] and out["after_all"] == [], out
    from manip_rl.envs import registry

    assert out["n_envs"] == len(registry.env_ids()) and out["action_finite"]
    assert out["mujoco_gl"] is None  # manip_rl leaves the user's environment alone


def test_policy_file_loads_without_importing_opengl():
    # ``import manip_rl`` registers the envs where Gymnasium is installed, and the task modules
    # import mujoco (without a GL backend); with Gymnasium absent the loader needs neither, which
    # the export's isolation check (tests/test_export.py) shows.
    code = loaded_gl_libraries_snippet() + (
        "import sys\n"
        "from manip_rl.export import load_policy\n"
        f"load_policy({str(PRETRAINED / 'panda_push.pt')!r})\n"
        "print(gl_libs(), 'OpenGL' in sys.modules)\n"
    )
    r = run_python(code, gl_env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "[] False"


_WHY_NOT = can_hide_gl_libraries()


@pytest.mark.skipif(_WHY_NOT is not None, reason=f"cannot hide the OpenGL libraries: {_WHY_NOT}")
def test_with_no_opengl_library_on_the_machine_everything_but_rendering_works(tmp_path):
    """OSMesa, EGL and GL hidden (as on a bare server): import, envs, a policy and `manip-rl
    robustness` work; rendering raises an error naming what to install."""
    r = run_python_without_gl(NO_RENDER_WORK, gl_env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert _last_json(r.stdout)["after_all"] == []

    out = tmp_path / "rob"
    cli = (
        "from manip_rl.cli import main\n"
        "raise SystemExit(main(['robustness', 'scripted:manip_rl/PandaReach-v0', '--episodes', "
        f"'1', '--quantities', '', '--shift-sets', '--n-envs', '1', '--out', {str(out)!r}, "
        "'--no-progress']))\n"
    )
    r = run_python_without_gl(cli, gl_env())
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.isfile(out / "robustness.csv")

    render = (
        "import gymnasium as gym, manip_rl\n"
        "from manip_rl.render import RenderBackendError\n"
        "env = gym.make('manip_rl/PandaReach-v0', render_mode='rgb_array', width=32, height=32)\n"
        "env.reset(seed=0)\n"
        "try:\n"
        "    env.render()\n"
        "except RenderBackendError as e:\n"
        "    print('ERROR', e)\n"
    )
    r = run_python_without_gl(render, gl_env())
    assert r.returncode == 0, r.stderr[-3000:]
    message = r.stdout.strip().splitlines()[-1]
    assert message.startswith("ERROR offscreen rendering needs EGL or OSMesa"), message
    assert "apt-get install libosmesa6" in message and "apt-get install libegl1" in message
