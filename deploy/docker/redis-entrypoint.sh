#!/usr/bin/env bash
# Redis for docker compose and Kubernetes: the local stack's redis.conf
# (deploy/local/templates/redis.conf.tmpl, rendered as deploy.local.redis.Redis.prepare() does)
# with the password from a secret file (requirepass: never on a command line or in the
# environment), the append-only file on the data volume (service state survives a restart),
# volatile-ttl eviction at REDIS_MAXMEMORY (settings.redis.maxmemory).  Only the bind address
# (every interface), the log (stdout, the container's log) and the data directory differ.
#
#   redis-entrypoint.sh            render the config and exec redis-server
#   redis-entrypoint.sh --render   render only (the unit tests compare it with the local stack's)
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
# shellcheck source=render-template.sh
source "$here/render-template.sh"

: "${REDIS_PASSWORD_FILE:?file holding the Redis password}"
conf=${REDIS_CONF_DIR:-/tmp/emotion-redis}   # private to the container: the file holds the password
template=${REDIS_TEMPLATE:-$here/redis.conf.tmpl}
password=$(read_secret "$REDIS_PASSWORD_FILE")
[[ -n $password ]] || { echo "redis: the password file is empty" >&2; exit 1; }

umask 077
mkdir -p "$conf"
render_template "$template" \
  "host=0.0.0.0" \
  "port=${REDIS_PORT:-6379}" \
  "password=$(quote "$password")" \
  "logfile=\"\"" \
  "dir=$(quote "${REDIS_DATA_DIR:-/data}")" \
  "maxmemory=${REDIS_MAXMEMORY:-512mb}" \
  >"$conf/redis.conf"

if [[ ${1:-} == --render ]]; then
  exit 0
fi
exec redis-server "$conf/redis.conf"
