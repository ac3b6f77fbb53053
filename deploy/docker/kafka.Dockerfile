# syntax=docker/dockerfile:1
# Kafka: the apache/kafka image (JVM) started by kafka-entrypoint.sh, which renders the local
# stack's server.properties template (copied in from deploy/local/templates, so both stacks run one
# broker configuration) and creates the SCRAM user when it formats the storage.
#
#   docker build -f deploy/docker/kafka.Dockerfile -t emotion-stream-kafka:0.1.0 .    # from the repo root
#
# KAFKA_VERSION is deploy.local.kafka.BrokerSettings.version, the version the local stack takes from
# Maven Central (tests/unit/test_deployment.py holds them equal).
ARG KAFKA_VERSION=4.3.1
FROM apache/kafka:${KAFKA_VERSION}

COPY --chmod=0755 deploy/docker/kafka-entrypoint.sh /opt/emotion/kafka-entrypoint.sh
COPY --chmod=0644 deploy/docker/render-template.sh /opt/emotion/render-template.sh
COPY --chmod=0644 deploy/local/templates/kafka-server.properties.tmpl /opt/emotion/kafka-server.properties.tmpl

ENV KAFKA_DATA_DIR=/var/lib/kafka/data
VOLUME ["/var/lib/kafka/data"]
EXPOSE 9092
ENTRYPOINT ["/opt/emotion/kafka-entrypoint.sh"]
CMD []
