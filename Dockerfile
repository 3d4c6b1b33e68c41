# One image for both servers; the command picks which (see docker-compose.yml).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LISTENER_DATA_DIR=/var/lib/listener
WORKDIR /app
COPY pyproject.toml README.md ./
COPY listener ./listener
COPY listener_common ./listener_common
COPY listener_core ./listener_core
COPY event_store ./event_store
COPY api_server ./api_server
COPY alert_server ./alert_server
COPY plugins ./plugins
RUN pip install --no-cache-dir . \
 && python -m listener_common.build plugins/* --out /app/dist/plugins \
 && useradd --system --uid 10001 listener \
 && mkdir -p /var/lib/listener && chown listener /var/lib/listener
USER listener
# Exec form, so SIGTERM reaches Python and the servers shut down gracefully.
ENTRYPOINT ["python", "-m"]
CMD ["api_server"]
