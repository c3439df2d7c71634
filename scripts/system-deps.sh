#!/usr/bin/env bash
# Debian packages the tests need: Chromium for the browser tests, CJK fonts so that
# the pages it renders (and their measured text sizes) are the ones elders see, and ffmpeg
# to turn a QR code into the video Chromium's fake camera plays to the provider's scan page.
# Installed only when missing; needs root (as on these machines).
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
dpkg -s fonts-noto-cjk >/dev/null 2>&1 || need+=(fonts-noto-cjk)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
