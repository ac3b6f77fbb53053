# syntax=docker/dockerfile:1
# Redis: the official image started by redis-entrypoint.sh, which renders the local stack's
# redis.conf template (copied in from deploy/local/templates) with the password from a secret file.
#
#   docker build -f deploy/docker/redis.Dockerfile -t emotion-stream-redis:0.1.0 .    # from the repo root
ARG REDIS_VERSION=7.4
FROM redis:${REDIS_VERSION}-bookworm

COPY --chmod=0755 deploy/docker/redis-entrypoint.sh /opt/emotion/redis-entrypoint.sh
COPY --chmod=0644 deploy/docker/render-template.sh /opt/emotion/render-template.sh
COPY --chmod=0644 deploy/local/templates/redis.conf.tmpl /opt/emotion/redis.conf.tmpl

ENV REDIS_DATA_DIR=/data
USER redis
EXPOSE 6379
ENTRYPOINT ["/opt/emotion/redis-entrypoint.sh"]
CMD []
