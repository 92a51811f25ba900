-- Dagster keeps its instance (runs, event logs, schedules) in its own database.
CREATE DATABASE dagster;
