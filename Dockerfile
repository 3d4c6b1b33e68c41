# One image for both servers and listenerctl; the command picks the server (docker-compose.yml).
# Two stages: the build stage installs into a virtualenv, the final one copies only that, so
# no compiler, pip cache or source tree ships.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY listener ./listener
COPY listener_common ./listener_common
COPY listener_core ./listener_core
COPY listener_client ./listener_client
COPY listener_cli ./listener_cli
COPY event_store ./event_store
COPY api_server ./api_server
COPY alert_server ./alert_server
COPY plugins ./plugins
RUN python -m venv /opt/listener \
 && /opt/listener/bin/pip install . \
 && /opt/listener/bin/python -m listener_common.build plugins/* --out /opt/listener/plugins

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/listener/bin:$PATH \
    LISTENER_DATA_DIR=/var/lib/listener
COPY --from=build /opt/listener /opt/listener
RUN useradd --system --uid 10001 --home-dir /var/lib/listener listener \
 && install -d -m 0700 -o listener /var/lib/listener \
 && install -d -m 0700 -o listener /var/lib/listener/output
# Non-root; data_dir (package cache, SQLite when no db_url) is the only writable place it
# needs, with output/ in it for the files plugins write (a shared volume in docker-compose.yml).
USER 10001
WORKDIR /var/lib/listener
# 50051 API, 8080 its HTTP/JSON and console, 50052 alert server (internal), 9464/9465 their
# /metrics when enabled.
EXPOSE 50051 8080 50052 9464 9465
# The gRPC health service of the default command (the API server); the compose file sets
# each service's own (the alert server answers on 50052).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=5 \
  CMD ["python", "-m", "listener_cli", "health", "--server", "127.0.0.1:50051", "--timeout", "3"]
# Exec form, so SIGTERM reaches Python and the servers shut down gracefully.
ENTRYPOINT ["python", "-m"]
CMD ["api_server"]
