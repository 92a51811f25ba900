"""Everything Dagster loads, assembled in one place (``workspace.yaml`` points here)."""

from dagster import Definitions

from pipelines.assets import room_graph_assets
from pipelines.assets.evaluation import golden_questions_recall
from pipelines.jobs import rebuild_room, refresh_room, room_purge
from pipelines.resources import KnowledgeResource
from pipelines.sensors import graphrag_events_sensor

defs = Definitions(
    assets=room_graph_assets,
    asset_checks=[golden_questions_recall],
    jobs=[refresh_room, rebuild_room, room_purge],
    sensors=[graphrag_events_sensor],
    resources={"knowledge": KnowledgeResource()},
)
