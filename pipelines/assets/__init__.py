from pipelines.assets.chunks import chunks
from pipelines.assets.communities import communities
from pipelines.assets.community_reports import community_reports
from pipelines.assets.entities import entities_and_relationships
from pipelines.assets.evidence import evidence

room_graph_assets = [chunks, evidence, entities_and_relationships, communities, community_reports]

__all__ = ["room_graph_assets"]
