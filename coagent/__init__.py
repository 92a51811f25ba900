"""The ``coagent`` command: wiring of the embedded services, Dagster and the API."""
