#!/usr/bin/env bash
# Sets up everything manip_rl needs on a fresh Debian machine with Python 3.11: the system
# library for offscreen rendering, a virtual environment in .venv, and the project with its
# ROS 2, ONNX, Ray, Warp and development extras. Safe to run again; it only installs what is missing.
#
# ROS 2 is Jazzy (the distro franka_ros2 runs on) unless `--ros kilted` (or MANIP_RL_ROS=kilted)
# asks for Kilted. A venv holding the other distro's wheels is switched: its ros-* packages are
# removed first, since the two distros' wheel sets differ (Kilted's fastdds 3 vs Jazzy's fastrtps
# 2.14, ...) and pip would leave the other's extras behind.
set -euo pipefail
cd "$(dirname "$0")/.."
ROS_DISTRO_WANTED="${MANIP_RL_ROS:-jazzy}"
if [ "${1:-}" = "--ros" ]; then ROS_DISTRO_WANTED="${2:?--ros takes jazzy or kilted}"; fi
case "$ROS_DISTRO_WANTED" in
    jazzy) ROS_EXTRA=ros; RCLPY_MAJOR=7 ;;
    kilted) ROS_EXTRA=ros-kilted; RCLPY_MAJOR=9 ;;
    *) echo "setup: --ros $ROS_DISTRO_WANTED: use jazzy or kilted" >&2; exit 2 ;;
esac

# grep without -q: -q would stop reading early and, with pipefail, fail the pipeline (SIGPIPE).
if ! ldconfig -p 2>/dev/null | grep libOSMesa >/dev/null; then
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
installed="$(.venv/bin/python -m pip show ros-rclpy 2>/dev/null | sed -n 's/^Version: //p' || true)"
if [ -n "$installed" ] && [ "${installed%%.*}" != "$RCLPY_MAJOR" ]; then
    echo "setup: switching ROS 2 wheels from rclpy $installed to $ROS_DISTRO_WANTED"
    .venv/bin/python -m pip freeze | sed -n 's/^\(ros-[A-Za-z0-9_.-]*\)==.*/\1/p' \
        | xargs -r .venv/bin/python -m pip uninstall -q -y
fi
.venv/bin/python -m pip install -q -e ".[$ROS_EXTRA,onnx,ray,warp,dev]"
# Upgrading a venv from the monolithic mujoco 3.x to 4.x (mujoco + mujoco-core) leaves the new
# bindings half-removed by the old package's uninstall; reinstalling the three repairs it.
if ! .venv/bin/python -c "import mujoco" 2>/dev/null; then
    echo "setup: repairing the mujoco install (upgrade from a 3.x venv)"
    # shellcheck disable=SC2046  # the pins, from pyproject.toml
    .venv/bin/python -m pip install -q --force-reinstall --no-deps \
        $(grep -o '"mujoco[a-z-]*==[0-9.]*"' pyproject.toml | tr -d '"')
    .venv/bin/python -c "import mujoco"
fi
echo "setup: done (.venv, ROS 2 $ROS_DISTRO_WANTED)"
