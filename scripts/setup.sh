#!/usr/bin/env bash
# One idempotent set-up for a fresh Linux machine (Debian/Ubuntu, run as root or with sudo):
# system packages, the Python environment, the Kafka jars and the offline model bundle.
# A second run only checks what is there and takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
PY_VERSION="${EMOTION_PYTHON:-3.11}"
export UV_PYTHON_DOWNLOADS=never  # use the machine's interpreter; never download one

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
t0=$SECONDS

step "system packages (redis-server, prometheus, espeak-ng, sox, Java, Maven)"
bash deploy/local/install-system.sh

step "Python environment ($VENV)"
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check uv
fi
stamp="$VENV/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  [ -x "$VENV/bin/python" ] || uv venv --quiet --python "$PY_VERSION" "$VENV"
  uv pip install --quiet --python "$VENV/bin/python" -e ".[bundle,test]"
  rm -f "$VENV"/.installed-* && touch "$stamp"
else
  echo "up to date"
fi

step "Kafka jars"
"$VENV/bin/emotion" stack install

step "offline model bundle"
"$VENV/bin/emotion" models fetch

echo
echo "set-up done in $((SECONDS - t0)) s"
