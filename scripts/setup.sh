#!/usr/bin/env bash
# Create .venv and install napari-crii with napari (PyQt6) and its test tools. Safe to run again.
# torch is pinned by constraints.txt (2.13.0); see README for the CUDA build.
#
# The napari tests draw with OpenGL on an X display: pytest-xvfb starts Xvfb. As root on a
# Debian/Ubuntu machine the missing system packages for that are installed here (set
# CRII_NO_APT=1 to skip); elsewhere a note names them, and those tests skip without them.
set -euo pipefail
cd "$(dirname "$0")/.."

# Xvfb, and what PyQt6's xcb platform plugin and OpenGL need at run time.
system_packages=(
  xvfb libgl1 libegl1 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libdbus-1-3 libx11-xcb1
  libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
  libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xkb1
)

install_system_packages() {
  command -v dpkg-query >/dev/null 2>&1 || return 0
  local missing=() pkg
  for pkg in "${system_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$pkg")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ] || [ -n "${CRII_NO_APT:-}" ] || ! command -v apt-get >/dev/null; then
    echo "note: napari tests will skip without: apt-get install ${missing[*]}" >&2
    return 0
  fi
  echo "installing system packages for napari under Xvfb: ${missing[*]}" >&2
  if ! { apt-get update -qq >/dev/null &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null; }; then
    echo "note: apt-get failed; napari tests will skip without: ${missing[*]}" >&2
  fi
}

install_system_packages

python_bin="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python_bin" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints.txt -e ".[gui,test]"
echo "napari-crii installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
