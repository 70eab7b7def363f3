#!/usr/bin/env bash
# fieldloop's two entry points on a fresh machine, both idempotent and fast the second time:
#
#   bash infra/dev.sh demo   set everything up, start the stack, run `fieldloop demo`
#   bash infra/dev.sh test   set everything up, run every test tier (the tests start the stack they need)
#   bash infra/dev.sh setup  only set up: system packages, .venv from the lock, JVM jars via Maven
#
# Setup installs what is missing and nothing else: Java 17, Maven and nginx from Debian when absent,
# the Python set pinned in infra/requirements.lock into .venv (re-run only when the lock or
# pyproject.toml changes), and the jars infra/pom.xml resolves (re-run only when the pom changes).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
LOCK=$ROOT/infra/requirements.lock

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

system_packages() {
  local missing=()
  command -v java >/dev/null 2>&1 || missing+=(openjdk-17-jdk-headless)
  command -v mvn >/dev/null 2>&1 || missing+=(maven)
  # the release repository's static server; Debian's nginx (not nginx-light, which only adds a module)
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing ${missing[*]} from Debian"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "missing: ${missing[*]} — install them (e.g. sudo apt-get install ${missing[*]}) and run again" >&2
      exit 1
    fi
  fi
}

python_env() {
  local py
  py=$(command -v python3.11 || command -v python3)
  if ! "$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "fieldloop needs Python 3.11; $py is $("$py" --version 2>&1)" >&2
    exit 1
  fi
  local want
  want=$(cat "$LOCK" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
  if [ -f "$VENV/.fieldloop-lock" ] && [ "$(cat "$VENV/.fieldloop-lock")" = "$want" ]; then
    return
  fi
  say "installing the locked Python set into .venv (first run: a few minutes)"
  [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$LOCK"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e "$ROOT"
  echo "$want" > "$VENV/.fieldloop-lock"
}

setup() {
  system_packages
  python_env
  say "resolving JVM jars (Maven Central, cached in ~/.m2)"
  "$VENV/bin/fieldloop" setup
}

case "${1:-}" in
  setup)
    setup ;;
  demo)
    setup
    exec "$VENV/bin/fieldloop" demo ;;
  test)
    setup
    shift
    say "ruff: lint and format; import-linter: the architecture's layers"
    "$VENV/bin/ruff" check --quiet "$ROOT" && "$VENV/bin/ruff" format --check --quiet "$ROOT"
    (cd "$ROOT" && "$VENV/bin/lint-imports" --no-cache --no-logo | tail -n +8)
    set +e
    "$VENV/bin/python" -m pytest "$@"
    rc=$?
    set -e
    # pytest exits 5 when a selection (-k, a path) matched no test: nothing failed, but say so
    if [ $rc = 5 ]; then echo "WARNING: no tests were collected (pytest exit 5)" >&2; rc=0; fi
    exit $rc ;;
  *)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2 ;;
esac
