#!/usr/bin/env bash
# Sets up everything NL Studio needs, idempotently: Debian libraries for Qt, a virtual
# environment in .venv, the pinned CPU torch wheel, and NL Studio itself (editable) with its
# test tools. Safe to run again; it only does what is missing.
#   TORCH=...   the torch requirement to install first (default torch==2.13.0, a CPU wheel here;
#               set TORCH=skip to keep whatever torch the environment already has, e.g. CUDA)
#   PYTHON=...  the interpreter for the venv (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH="${TORCH:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.nlstudio-installed"

# Qt's runtime libraries on a bare Debian/Ubuntu machine (offscreen and a real X window).
SYS_PKGS=(libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libglib2.0-0
          fonts-dejavu-core libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxcb-image0
          libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libx11-xcb1)
if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for p in "${SYS_PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "setup: installing system libraries for Qt: ${missing[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
      echo "setup: Qt needs these system libraries; please run:"
      echo "  sudo apt-get install -y --no-install-recommends ${missing[*]}"
    fi
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
  if [ "$TORCH" != skip ] && ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    echo "setup: installing $TORCH"
    "${PIP[@]}" install "$TORCH"
  fi
  echo "setup: installing NL Studio (editable) and its test tools"
  "${PIP[@]}" install -e ".[test]"
  touch "$STAMP"
fi
