# One image for the API, the Dagster webserver/daemon and the run workers.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY knowledge knowledge
COPY pipelines pipelines
COPY realtime realtime
COPY serving serving
COPY dbschema dbschema
COPY coagent coagent
COPY workspace.yaml ./
RUN pip install --no-cache-dir .
ENV DAGSTER_HOME=/opt/dagster/home
COPY deploy/dagster/dagster.yaml /opt/dagster/home/dagster.yaml
# Every process of the image (API, Dagster webserver, daemon, runs, workers) runs as an
# unprivileged user; only its Dagster home and data dir are writable.
RUN groupadd --system --gid 10001 coagent \
    && useradd --system --uid 10001 --gid coagent --home-dir /home/coagent --create-home coagent \
    && chown -R coagent:coagent /opt/dagster/home
ENV COAGENT_DATA_DIR=/home/coagent/.coagent
USER coagent:coagent
EXPOSE 8000 3000
CMD ["coagent", "serve", "--host", "0.0.0.0"]
