#!/usr/bin/env bash
# System packages of the local stack (Debian/Ubuntu): Redis, Prometheus, the audio tools used to
# synthesise test calls, Java + Maven for Kafka, and Asterisk's telephony prompts (real phone speech
# with transcripts: `emotion bench`'s word error rates).  Idempotent: apt is not touched at all when
# every binary/library is already present, and `apt-get update` runs only when something is
# missing.  Needs root (or sudo).  Called by the README's setup script before the venv exists,
# and by `deploy.local.stack.install()`.
set -euo pipefail

# binary-or-library  debian-package
REQUIRED=(
  "redis-server       redis-server"
  "prometheus         prometheus"
  "espeak-ng          espeak-ng"
  "sox                sox"
  "lib:libsndfile.so.1 libsndfile1"
  "java               openjdk-17-jre-headless"
  "mvn                maven"
  "chromium           chromium"
  "file:/usr/share/asterisk/sounds/en/agent-pass.wav                    asterisk-core-sounds-en-wav"
  "file:/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz    asterisk-core-sounds-en"
)

missing=()
for entry in "${REQUIRED[@]}"; do
  read -r what pkg <<<"$entry"
  if [[ $what == lib:* ]]; then
    lib=${what#lib:}
    if ldconfig -p 2>/dev/null | grep -q "$lib"; then continue; fi
  elif [[ $what == file:* ]]; then
    if [[ -e ${what#file:} ]]; then continue; fi
  elif command -v "$what" >/dev/null 2>&1; then
    continue
  fi
  missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-system: all system packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-system: need root to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "install-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

# The Debian packages enable system services; the stack runs its own instances on its own
# ports, so stop the distribution's ones where a service manager started them.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  for svc in redis-server prometheus; do
    $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
  done
fi
echo "install-system: done"
