#!/usr/bin/env bash
# Installs Debian packages with apt-get, as root or through sudo: the system
# packages the tests need (chromium, nodejs, cmake, libcurl headers).
#   scripts/apt-install.sh PACKAGE...
set -euo pipefail
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "apt-install.sh: need root or sudo to install: $*" >&2; exit 1; }
  sudo="sudo"
fi
echo "apt-install.sh: installing $* with apt-get" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
