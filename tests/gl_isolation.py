"""Helpers for the tests that run manip_rl in a subprocess with chosen OpenGL conditions."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys

GL_LIBRARIES = ("libGL.so", "libGLX", "libOSMesa", "libEGL")
# Where Debian keeps the OpenGL libraries; hidden to make a machine without any.
_LIB_GLOBS = tuple(
    f"/usr/lib/x86_64-linux-gnu/{name}*.so*"
    for name in ("libGL", "libGLX", "libOSMesa", "libEGL", "libOpenGL", "libGLES")
)


def gl_env(**overrides: str) -> dict[str, str]:
    """This environment without MUJOCO_GL, PYOPENGL_PLATFORM or a display, plus ``overrides``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY", "WAYLAND_DISPLAY")
    }
    env.update(overrides)
    return env


def loaded_gl_libraries_snippet() -> str:
    """Python source defining ``gl_libs()``: the OpenGL libraries mapped into that process."""
    return (
        "def gl_libs():\n"
        "    with open('/proc/self/maps') as f:\n"
        "        names = {line.split()[-1].rsplit('/', 1)[-1] for line in f if '/' in line}\n"
        f"    return sorted(n for n in names if n.startswith({GL_LIBRARIES!r}))\n"
    )


def run_python(code: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=timeout
    )


def can_hide_gl_libraries() -> str | None:
    """None if a user+mount namespace can hide the OpenGL libraries here, else why not."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return "needs Linux with unshare(1)"
    r = subprocess.run(["unshare", "-rm", "true"], capture_output=True, text=True)
    if r.returncode != 0:
        return f"unshare -rm is not permitted here: {r.stderr.strip()}"
    if not any(glob.glob(g) for g in _LIB_GLOBS):
        return "no OpenGL libraries to hide"
    return None


def run_python_without_gl(
    code: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run ``code`` where every OpenGL library (OSMesa, EGL, GL, GLX) is replaced by an empty
    file, as on a machine without them: /dev/null bound over each in a private mount namespace."""
    hide = (
        f"for f in {' '.join(_LIB_GLOBS)}; do "
        '[ -f "$f" ] && [ ! -L "$f" ] && mount --bind /dev/null "$f"; done; '
        'exec "$0" -c "$1"'
    )
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", hide, sys.executable, code],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
