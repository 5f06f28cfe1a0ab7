"""Offscreen rendering whose OpenGL backend is chosen when the first frame is rendered.

Importing manip_rl, making and stepping an env, and loading a policy load no OpenGL library, so
they work on machines without OSMesa, EGL or a display. The first :class:`Renderer` picks the
backend: the one ``MUJOCO_GL`` names if the user set it, else EGL (a GPU, or Mesa's software EGL),
else OSMesa (software). If none works, :class:`RenderBackendError` says what to install.

MuJoCo's own ``mujoco.Renderer`` takes its backend from ``MUJOCO_GL`` when ``mujoco`` is first
imported, so manip_rl draws with MuJoCo's public rendering functions and a GL context class it
imports only here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import mujoco
import numpy as np

# What to install for each backend, named in the errors.
INSTALL = {
    "egl": "EGL: `apt-get install libegl1` (with an NVIDIA GPU, its driver's libEGL)",
    "osmesa": "OSMesa (software rendering, any machine): `apt-get install libosmesa6`",
    "glfw": "GLFW needs a display (DISPLAY set, an X or Wayland server running)",
}
AUTO_ORDER = ("egl", "osmesa")  # tried in this order when MUJOCO_GL is unset
_GLFW_NAMES = ("glfw", "glx", "enable", "enabled", "on", "true", "1")
_DISABLED_NAMES = ("disable", "disabled", "off", "false", "0")

# A subprocess that makes an EGL context. EGL is probed apart from this process because PyOpenGL
# fixes its platform (EGL or OSMesa) at its first import: an EGL attempt that fails here would
# leave OSMesa unusable in this process.
_EGL_PROBE = "from mujoco.egl import GLContext\nc = GLContext(8, 8)\nc.make_current()\nc.free()\n"

_lock = threading.Lock()
_chosen: tuple[str, type] | None = None


class RenderBackendError(RuntimeError):
    """No OpenGL backend for offscreen rendering works on this machine."""


def _requested() -> str:
    return os.environ.get("MUJOCO_GL", "").strip().lower()


def _import_context(name: str) -> type:
    """The GLContext class of a backend, checked by making and freeing a small context."""
    if name == "egl":
        from mujoco.egl import GLContext
    elif name == "osmesa":
        from mujoco.osmesa import GLContext
    else:
        from mujoco.glfw import GLContext
    ctx = GLContext(8, 8)
    ctx.make_current()
    ctx.free()
    return GLContext


def _egl_probe() -> str | None:
    """None if an EGL context can be made on this machine, else why not."""
    env = dict(os.environ, MUJOCO_GL="disable")  # the probe's `import mujoco` loads no backend
    try:
        r = subprocess.run(
            [sys.executable, "-c", _EGL_PROBE], env=env, capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if r.returncode == 0:
        return None
    lines = r.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit status {r.returncode}"


def _choose() -> tuple[str, type]:
    requested = _requested()
    if requested in _DISABLED_NAMES:
        raise RenderBackendError(
            f"MUJOCO_GL={os.environ['MUJOCO_GL']!r} disables rendering: unset MUJOCO_GL (manip_rl "
            "then picks EGL or OSMesa) or set it to egl, osmesa or glfw"
        )
    if requested:
        name = "glfw" if requested in _GLFW_NAMES else requested
        if name not in INSTALL:
            raise RenderBackendError(
                f"MUJOCO_GL={os.environ['MUJOCO_GL']!r} is not a rendering backend: use egl, "
                "osmesa or glfw, or unset it (manip_rl then picks EGL or OSMesa)"
            )
        try:
            return name, _import_context(name)
        except Exception as e:
            raise RenderBackendError(
                f"MUJOCO_GL={os.environ['MUJOCO_GL']!r}: the {name} backend does not work here "
                f"({type(e).__name__}: {e}). Install {INSTALL[name]}, or unset MUJOCO_GL so "
                "manip_rl picks EGL or OSMesa"
            ) from e
    reasons = {}
    for name in AUTO_ORDER:
        if name == "egl" and "OpenGL" not in sys.modules:
            reasons[name] = _egl_probe()
            if reasons[name] is not None:
                continue
        try:
            return name, _import_context(name)
        except Exception as e:
            reasons[name] = f"{type(e).__name__}: {e}"
    tried = "; ".join(f"{n}: {r}" for n, r in reasons.items())
    raise RenderBackendError(
        f"offscreen rendering needs EGL or OSMesa and neither works here ({tried}). Install "
        f"{INSTALL['osmesa']}, or {INSTALL['egl']}; or set MUJOCO_GL to a backend that works"
    )


def backend() -> tuple[str, type]:
    """The backend this process renders with, as (name, GLContext class); chosen on first call.

    Raises :class:`RenderBackendError` (again on each call) if no backend works."""
    global _chosen
    with _lock:
        if _chosen is None:
            _chosen = _choose()
        return _chosen


class Renderer:
    """Renders a model's scene from one of its cameras into RGB arrays of a fixed size."""

    def __init__(self, model: mujoco.MjModel, height: int, width: int) -> None:
        vis = model.vis.global_
        if width > vis.offwidth or height > vis.offheight:
            raise ValueError(
                f"render size {width}x{height} exceeds the model's offscreen buffer "
                f"{vis.offwidth}x{vis.offheight}: ask for a smaller width/height"
            )
        self._gl = None
        self._context: mujoco.MjrContext | None = None
        _, context_class = backend()
        self._model, self._height, self._width = model, height, width
        self._gl = context_class(width, height)
        self._gl.make_current()
        self._scene = mujoco.MjvScene(model, maxgeom=10_000)
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._pixels = np.empty((height, width, 3), dtype=np.uint8)

    def render(self, data: mujoco.MjData, camera: str) -> np.ndarray:
        """An RGB frame (height, width, 3; uint8) of ``data`` seen from the named camera."""
        if self._context is None:
            raise RuntimeError("this Renderer is closed")
        cam_id = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if cam_id < 0:
            raise ValueError(f"camera {camera!r}: the model has no camera of that name")
        self._camera.fixedcamid = cam_id
        self._gl.make_current()
        mujoco.mjv_updateScene(
            self._model,
            data,
            self._option,
            None,
            self._camera,
            mujoco.mjtCatBit.mjCAT_ALL,
            self._scene,
        )
        mujoco.mjr_render(self._rect, self._scene, self._context)
        mujoco.mjr_readPixels(self._pixels, None, self._rect, self._context)
        return np.flipud(self._pixels).copy()  # OpenGL's rows run bottom to top

    def close(self) -> None:
        """Free the GL resources; safe to call more than once."""
        if self._gl is not None:
            self._gl.make_current()  # the MjrContext's GL objects belong to this context
            if self._context is not None:
                self._context.free()
            self._gl.free()
        self._gl = self._context = None
