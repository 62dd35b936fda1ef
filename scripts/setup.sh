#!/usr/bin/env bash
# Everything slidr needs on a fresh Debian machine: Java, Maven, Redis, docker-compose (the
# tests validate docker-compose.yml with it), Prometheus (promtool checks the alert rules; a
# test runs the server) and Chromium (a test opens the daily cycle's HTML page headless) from
# apt, Python 3.11 and the virtual environment at .venv/ from constraints.txt. Safe to run
# again: it skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

missing=()
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools) # redis-cli, redis-benchmark
command -v docker-compose >/dev/null || missing+=(docker-compose)
{ command -v promtool && command -v prometheus; } >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium) # renders the cycle's HTML page in tests
command -v openssl >/dev/null || missing+=(openssl) # the replay-signing test runs the documented openssl recipe
if ((${#missing[@]})); then
  log "installing with apt: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null &&
    "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    python=$(command -v "$candidate")
    break
  fi
done
if [ -z "$python" ]; then
  log "Python 3.11 is required (the Triton Python-backend stub is built for it): apt-get install -y python3.11 python3.11-venv"
  exit 1
fi

stamp=.venv/.slidr-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ]; then
  log "creating .venv with $python"
  "$python" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python dependencies (pinned by constraints.txt; torch is large, first run takes minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[learn,dev]"
  echo "$want" >"$stamp"
fi
log "ready: .venv/bin/slidr"
