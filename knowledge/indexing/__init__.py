"""The room index, step by step: chunks → evidence → graph → communities → reports.

Each step is incremental and idempotent: it diffs what the room's sources say against what is
stored, writes only the difference, and running it again changes nothing. Dagster assets are
thin wrappers around these functions; each step lives in the module named after what it
produces, and this package exports their public names.
"""

from knowledge.indexing.chunks import ChunkSync, room_chunks, sync_chunks
from knowledge.indexing.communities import CommunityBuild, detect_communities
from knowledge.indexing.evidence import (
    EvidenceSync,
    message_unit_id,
    passage_unit_id,
    sync_evidence,
)
from knowledge.indexing.graph import GraphBuild, build_graph, room_aliases
from knowledge.indexing.reports import ReportBuild, write_reports
from knowledge.indexing.room import RoomIndex, index_room, room_state, wipe_room
from knowledge.indexing.vectors import VectorSync, fingerprint, sync_vectors

__all__ = [
    "ChunkSync",
    "CommunityBuild",
    "EvidenceSync",
    "GraphBuild",
    "ReportBuild",
    "RoomIndex",
    "VectorSync",
    "build_graph",
    "detect_communities",
    "fingerprint",
    "index_room",
    "message_unit_id",
    "passage_unit_id",
    "room_aliases",
    "room_chunks",
    "room_state",
    "sync_chunks",
    "sync_evidence",
    "sync_vectors",
    "wipe_room",
    "write_reports",
]
