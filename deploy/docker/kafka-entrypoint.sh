#!/usr/bin/env bash
# Kafka for docker compose and Kubernetes: the local stack's single-node KRaft broker+controller
# (deploy/local/kafka.py) in the apache/kafka image.
#
# * server.properties is deploy/local/templates/kafka-server.properties.tmpl, rendered with the
#   values deploy.local.kafka.Kafka.prepare() gives it; only the listeners differ: CLIENT binds
#   every interface and is advertised as KAFKA_ADVERTISED_HOST (the compose service or the pod's
#   stable DNS name), CONTROLLER stays on 127.0.0.1 (one node is its own quorum: nothing else
#   ever connects to it).
# * Clients authenticate with SASL/SCRAM-SHA-512 as KAFKA_USERNAME (settings.kafka.username); the
#   user is created in the metadata log when the storage is formatted (`--add-scram`: KRaft keeps
#   SCRAM credentials there), once, on an empty data volume.  The controller listener takes
#   SASL/PLAIN with one user, the broker itself.
# * Passwords come from files (compose secrets, a Kubernetes Secret volume), never the environment.
#   A data volume formatted with other credentials is refused, as the local stack refuses it.
#
#   kafka-entrypoint.sh            render the config, format once, exec the broker
#   kafka-entrypoint.sh --render   render only (the unit tests compare it with the local stack's)
set -euo pipefail
here=$(dirname "$(readlink -f "$0")")
# shellcheck source=render-template.sh
source "$here/render-template.sh"

: "${KAFKA_CLUSTER_ID:?the 22-character cluster id (deploy.local.kafka.cluster_id)}"
: "${KAFKA_ADVERTISED_HOST:?the name clients reach this broker by}"
: "${KAFKA_PASSWORD_FILE:?file holding the SCRAM password of the client user}"
: "${KAFKA_CONTROLLER_PASSWORD_FILE:?file holding the controller listener password}"
port=${KAFKA_PORT:-9092}
controller_port=${KAFKA_CONTROLLER_PORT:-9093}
username=${KAFKA_USERNAME:-emotion}
mechanism=${KAFKA_SASL_MECHANISM:-SCRAM-SHA-512}
data=${KAFKA_DATA_DIR:-/var/lib/kafka/data}
conf=${KAFKA_CONF_DIR:-/tmp/emotion-kafka}   # private to the container: the files hold passwords
template=${KAFKA_TEMPLATE:-$here/kafka-server.properties.tmpl}
password=$(read_secret "$KAFKA_PASSWORD_FILE")
controller_password=$(read_secret "$KAFKA_CONTROLLER_PASSWORD_FILE")
[[ -n $password && -n $controller_password ]] || { echo "kafka: an empty password file" >&2; exit 1; }

scram=$(tr '[:upper:]' '[:lower:]' <<<"$mechanism")
# deploy.local.kafka.Listeners.security_lines(), line for line
security_extra="sasl.enabled.mechanisms=${mechanism}
sasl.mechanism.inter.broker.protocol=${mechanism}
listener.name.client.${scram}.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=$(quote "$username") password=$(quote "$password");
listener.name.controller.sasl.enabled.mechanisms=PLAIN
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"controller\" password=$(quote "$controller_password") user_controller=$(quote "$controller_password");"

umask 077
mkdir -p "$conf"
render_template "$template" \
  "host=127.0.0.1" \
  "controller_port=${controller_port}" \
  "listeners=CLIENT://0.0.0.0:${port},CONTROLLER://127.0.0.1:${controller_port}" \
  "advertised_listeners=CLIENT://${KAFKA_ADVERTISED_HOST}:${port},CONTROLLER://127.0.0.1:${controller_port}" \
  "protocol_map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT" \
  "inter_broker_listener=CLIENT" \
  "security_extra=${security_extra}" \
  "log_dirs=${data}" \
  "num_partitions=${KAFKA_NUM_PARTITIONS:-4}" \
  "internal_partitions=${KAFKA_NUM_PARTITIONS:-4}" \
  "max_message_bytes=${KAFKA_MAX_MESSAGE_BYTES:-8388608}" \
  "retention_hours=${KAFKA_RETENTION_HOURS:-24}" \
  >"$conf/server.properties"

# The admin tools' and the health check's client configuration (kafka-*.sh --command-config).
cat >"$conf/client.properties" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=${mechanism}
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=$(quote "$username") password=$(quote "$password");
PROPERTIES

# deploy.local.kafka.Listeners.fingerprint(): what the formatted storage's credentials were made from.
fingerprint=$(printf '%s' "SASL_PLAINTEXT|${mechanism}|${username}|${password}" | sha256sum | cut -d' ' -f1)
printf '%s\n' "$fingerprint" >"$conf/credentials.sha256"

if [[ ${1:-} == --render ]]; then
  exit 0
fi

if [[ ! -f $data/meta.properties ]]; then
  echo "kafka: formatting $data (cluster id $KAFKA_CLUSTER_ID) with SCRAM user $username"
  /opt/kafka/bin/kafka-storage.sh format -t "$KAFKA_CLUSTER_ID" -c "$conf/server.properties" --standalone \
    --add-scram "${mechanism}=[name=${username},password=${password}]"
  cp "$conf/credentials.sha256" "$data/.emotion-credentials.sha256"
elif ! cmp -s "$conf/credentials.sha256" "$data/.emotion-credentials.sha256"; then
  echo "kafka: $data was formatted with other credentials than the secret files give (user $username):" \
       "restore the password it was made with, or delete the volume to format it anew (its messages are lost)" >&2
  exit 1
fi

export KAFKA_HEAP_OPTS="-Xmx${KAFKA_HEAP:-512m} -Xms${KAFKA_HEAP:-512m}"
exec /opt/kafka/bin/kafka-server-start.sh "$conf/server.properties"
