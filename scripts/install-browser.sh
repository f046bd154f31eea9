#!/usr/bin/env bash
# Install (or find) a headless Chromium and the Playwright Python package for the studio browser tests.
#
#   scripts/install-browser.sh [PYTHON]        (default PYTHON: .venv/bin/python, else python3)
#
# Idempotent and fast the second time: it only checks when both are present. Playwright's own browser
# download is often unreachable, so the browser comes from the system package manager (Debian/Ubuntu
# `chromium`, as root) or from a browser already on the machine ($FOURFOLD_CHROMIUM, chromium,
# chromium-browser, google-chrome). Without root and without a browser it says so and exits 0: the browser
# tests then skip with that reason. In CI (CI set to anything but "false"/"0") a missing browser is an error.
set -euo pipefail

PY="${1:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
ci=0
[[ -n "${CI:-}" && "${CI}" != "false" && "${CI}" != "0" ]] && ci=1

fail() {
  echo "install-browser: $*" >&2
  if [[ $ci == 1 ]]; then exit 1; fi
  echo "install-browser: the studio browser tests will skip" >&2
  exit 0
}

find_browser() {
  local c
  for c in "${FOURFOLD_CHROMIUM:-}" chromium chromium-browser google-chrome google-chrome-stable; do
    [[ -z "$c" ]] && continue
    if command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
  done
  return 1
}

# 1. the Playwright Python package (the studio's [ui] extra lists it; install it here if it is missing)
if ! "$PY" -c "import playwright.sync_api" >/dev/null 2>&1; then
  echo "install-browser: installing the playwright Python package into $PY"
  "$PY" -m pip install --quiet --disable-pip-version-check "playwright>=1.40" || fail "pip could not install playwright"
fi

# 2. a Chromium binary
if browser="$(find_browser)"; then
  echo "install-browser: using $browser ($("$browser" --version 2>/dev/null | head -1 || true))"
  exit 0
fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: apt-get install chromium (about a minute)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # Debian names it chromium; Ubuntu's chromium-browser is a snap stub, so try chromium first
  apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
    || apt-get install -y -qq --no-install-recommends chromium-browser >/dev/null 2>&1 \
    || fail "apt-get could not install chromium"
  browser="$(find_browser)" || fail "chromium was installed but is not on PATH"
  echo "install-browser: installed $browser ($("$browser" --version 2>/dev/null | head -1 || true))"
  exit 0
fi
# last resort: Playwright's own download (works where its CDN is reachable)
if "$PY" -m playwright install chromium >/dev/null 2>&1; then
  echo "install-browser: installed Playwright's bundled chromium"
  exit 0
fi
fail "no Chromium found: install the chromium package (as root), or set FOURFOLD_CHROMIUM to a Chrome/Chromium binary"
