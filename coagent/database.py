"""The database every command needs: started (embedded) or reached, and migrated."""

from __future__ import annotations

from coagent.progress import step
from dbschema.migrate import upgrade
from knowledge.platform import database_url, sync_engine
from knowledge.settings import Settings


def prepare_database(settings: Settings) -> None:
    with step(
        "Starting PostgreSQL" if settings.uses_embedded_postgres else "Connecting PostgreSQL"
    ):
        database_url(settings)
    with step("Applying migrations"):
        engine = sync_engine(settings)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
