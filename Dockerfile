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
EXPOSE 8000 3000
CMD ["coagent", "serve", "--host", "0.0.0.0"]
