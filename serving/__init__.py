"""The CoAgent Studio API (FastAPI): ``create_app(settings)`` in ``serving.app``."""
