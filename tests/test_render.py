"""Rendering picks its OpenGL backend at the first frame (issue #15, item 5): MUJOCO_GL if the user
set it, else EGL, else OSMesa; a backend that cannot load raises an error naming what to install.
Each case runs in a subprocess, since a process keeps the backend it chose. Needs libosmesa6
(scripts/setup.sh installs it)."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

import manip_rl  # noqa: F401  (registers the envs)
from manip_rl import render
from tests.gl_isolation import gl_env, loaded_gl_libraries_snippet, run_python

# Renders a Push scene and prints the backend, the frame's statistics and the libraries loaded;
# with COMPARE set, also MuJoCo's own Renderer's frame of the same state (it reads MUJOCO_GL at
# `import mujoco`, so it is the reference for an explicit MUJOCO_GL).
RENDER = (
    loaded_gl_libraries_snippet()
    + """
import json
import gymnasium as gym, mujoco, numpy as np
import manip_rl
from manip_rl import render
from manip_rl.render import RenderBackendError
env = gym.make("manip_rl/PandaPush-v0", render_mode="rgb_array", width=64, height=48)
env.reset(seed=0)
try:
    frame = env.render()
except RenderBackendError as e:
    print(json.dumps({"error": str(e)}))
    raise SystemExit(0)
out = {"backend": render.backend()[0], "shape": list(frame.shape), "dtype": str(frame.dtype),
       "std": float(frame.std()), "libs": gl_libs()}
if COMPARE:
    ref = mujoco.Renderer(env.unwrapped.model, 48, 64)
    ref.update_scene(env.unwrapped.data, camera="front")
    out["max_diff_vs_mujoco"] = int(np.abs(ref.render().astype(int) - frame).max())
    ref.close()
env.close()
print(json.dumps(out))
"""
)


def _render(compare: bool = False, **env: str) -> dict:
    r = run_python(f"COMPARE = {compare}\n" + RENDER, gl_env(**env))
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_osmesa_renders_the_scene_as_mujocos_renderer_does():
    out = _render(compare=True, MUJOCO_GL="osmesa")
    assert out["backend"] == "osmesa"
    assert out["shape"] == [48, 64, 3] and out["dtype"] == "uint8"
    assert out["std"] > 5  # a scene, not a blank image
    assert any(lib.startswith("libOSMesa") for lib in out["libs"])
    assert out["max_diff_vs_mujoco"] == 0  # same pixels, same orientation


def test_unset_mujoco_gl_picks_egl_when_it_works_else_osmesa():
    out = _render()
    expected = "egl" if render._egl_probe() is None else "osmesa"
    assert out["backend"] == expected and out["std"] > 5, out
    # EGL that cannot make a context (a device that does not exist): OSMesa is used instead.
    out = _render(MUJOCO_EGL_DEVICE_ID="99")
    assert out["backend"] == "osmesa" and out["std"] > 5, out


def test_a_chosen_backend_that_cannot_load_says_what_to_install():
    # mujoco.egl refuses when PyOpenGL is bound to another platform: EGL cannot load.
    out = _render(MUJOCO_GL="egl", PYOPENGL_PLATFORM="osmesa")
    assert out["error"].startswith("MUJOCO_GL='egl': the egl backend does not work here"), out
    assert "apt-get install libegl1" in out["error"] and "unset MUJOCO_GL" in out["error"]


def test_no_working_backend_names_both_and_what_to_install():
    # EGL without a usable device, and OSMesa refused by PyOpenGL bound to EGL.
    out = _render(MUJOCO_EGL_DEVICE_ID="99", PYOPENGL_PLATFORM="egl")
    error = out["error"]
    assert error.startswith("offscreen rendering needs EGL or OSMesa"), out
    assert "egl: " in error and "osmesa: " in error
    assert "apt-get install libosmesa6" in error and "apt-get install libegl1" in error


@pytest.mark.parametrize("value", ["disable", "vulkan"])
def test_mujoco_gl_that_names_no_backend_is_refused_by_name(value, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", value)
    with pytest.raises(render.RenderBackendError, match=f"MUJOCO_GL='{value}'"):
        render._choose()


def test_renderer_refuses_a_bad_camera_and_an_oversized_frame_and_closes_twice():
    env = gym.make("manip_rl/PandaReach-v0")
    base = env.unwrapped
    env.reset(seed=0)
    vis = base.model.vis.global_
    with pytest.raises(ValueError, match="offscreen buffer"):
        render.Renderer(base.model, vis.offheight + 1, 32)
    r = render.Renderer(base.model, 24, 32)
    try:
        with pytest.raises(ValueError, match="'nope'"):
            r.render(base.data, camera="nope")
        frame = r.render(base.data, camera="front")
        assert frame.shape == (24, 32, 3) and np.ptp(frame) > 0
    finally:
        r.close()
    r.close()
    with pytest.raises(RuntimeError, match="closed"):
        r.render(base.data, camera="front")
    env.close()
