#!/usr/bin/env bash
# Sets up everything manip_rl needs on a fresh Debian machine with Python 3.11: the system
# library for offscreen rendering, a virtual environment in .venv, and the project with its
# ROS 2, ONNX, Ray and development extras. Safe to run again; it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ldconfig -p 2>/dev/null | grep -q libOSMesa; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "setup: installing libosmesa6 (offscreen rendering without a GPU)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libosmesa6 >/dev/null
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "manip_rl needs Python 3.11 (the ROS 2 wheels are built for it)"'
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[ros,onnx,ray,dev]"
# Upgrading a venv from the monolithic mujoco 3.x to 4.x (mujoco + mujoco-core) leaves the new
# bindings half-removed by the old package's uninstall; reinstalling the three repairs it.
if ! .venv/bin/python -c "import mujoco" 2>/dev/null; then
    echo "setup: repairing the mujoco install (upgrade from a 3.x venv)"
    # shellcheck disable=SC2046  # the pins, from pyproject.toml
    .venv/bin/python -m pip install -q --force-reinstall --no-deps \
        $(grep -o '"mujoco[a-z-]*==[0-9.]*"' pyproject.toml | tr -d '"')
    .venv/bin/python -c "import mujoco"
fi
echo "setup: done (.venv)"
