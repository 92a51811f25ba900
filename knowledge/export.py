"""Export a room's index in Microsoft GraphRAG's output layout (Parquet tables).

``export_room`` writes ``entities``, ``relationships``, ``communities``, ``community_reports``,
``text_units`` and ``documents`` ``.parquet`` files with GraphRAG 2.x's columns, in its order
(``graphrag/data_model/schemas.py``: ``*_FINAL_COLUMNS``), so GraphRAG's query engine and the
tools built on its output can read a CoAgent room:

- entity ``title`` is the entity's display name and relationship ``source`` / ``target`` are
  those titles; ``frequency`` is the number of text units mentioning the entity, ``degree`` its
  number of relationships, ``combined_degree`` the sum of both ends' degrees;
- communities are numbered (``community``, an int: by level, then size, then id), ``parent`` is
  -1 at the top level, ``relationship_ids`` / ``text_unit_ids`` are those of the relationships
  inside the community, as GraphRAG computes them;
- a text unit is a stored chunk (its id is the chunk id); documents are the room's
  conversation (one document) and each artifact;
- ids are stable: UUID5 of the room and the object's key, so exporting twice gives the same ids;
  ``human_readable_id`` follows GraphRAG (0-based for entities and relationships, the
  community number for communities and reports, 1-based for text units and documents).

The room's data is read as stored (the last materialization), never recomputed.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from dbschema.models import Artifact, Message
from knowledge.chat import load_room_sources
from knowledge.graph import Community, CommunityReport
from knowledge.indexing import room_chunks
from knowledge.platform import Platform
from knowledge.rooms import get_room

#: Namespace of every exported id (uuid5 of "<room>/<kind>/<key>").
EXPORT_NAMESPACE = uuid.UUID("6f7c1c3e-2a55-4d0e-9a43-3b0f3c2f9d11")

#: The finding the LLM report writer appends to carry the rating's explanation.
RATING_FINDING = "Rating"

TABLES = (
    "entities",
    "relationships",
    "communities",
    "community_reports",
    "text_units",
    "documents",
)


def _schemas() -> dict[str, dict[str, Any]]:
    import polars as pl

    ids = pl.List(pl.String)
    finding = pl.Struct({"summary": pl.String, "explanation": pl.String})
    metadata = pl.Struct({"room_id": pl.String, "source": pl.String, "artifact_id": pl.String})
    return {
        "entities": {
            "id": pl.String,
            "human_readable_id": pl.Int64,
            "title": pl.String,
            "type": pl.String,
            "description": pl.String,
            "text_unit_ids": ids,
            "frequency": pl.Int64,
            "degree": pl.Int64,
        },
        "relationships": {
            "id": pl.String,
            "human_readable_id": pl.Int64,
            "source": pl.String,
            "target": pl.String,
            "description": pl.String,
            "weight": pl.Float64,
            "combined_degree": pl.Int64,
            "text_unit_ids": ids,
        },
        "communities": {
            "id": pl.String,
            "human_readable_id": pl.Int64,
            "community": pl.Int64,
            "level": pl.Int64,
            "parent": pl.Int64,
            "children": pl.List(pl.Int64),
            "title": pl.String,
            "entity_ids": ids,
            "relationship_ids": ids,
            "text_unit_ids": ids,
            "period": pl.String,
            "size": pl.Int64,
        },
        "community_reports": {
            "id": pl.String,
            "human_readable_id": pl.Int64,
            "community": pl.Int64,
            "level": pl.Int64,
            "parent": pl.Int64,
            "children": pl.List(pl.Int64),
            "title": pl.String,
            "summary": pl.String,
            "full_content": pl.String,
            "rank": pl.Float64,
            "rating_explanation": pl.String,
            "findings": pl.List(finding),
            "full_content_json": pl.String,
            "period": pl.String,
            "size": pl.Int64,
        },
        "text_units": {
            "id": pl.String,
            "human_readable_id": pl.Int64,
            "text": pl.String,
            "n_tokens": pl.Int64,
            "document_ids": ids,
            "entity_ids": ids,
            "relationship_ids": ids,
            "covariate_ids": ids,
        },
        "documents": {
            "id": pl.String,
            "human_readable_id": pl.Int64,
            "title": pl.String,
            "text": pl.String,
            "text_unit_ids": ids,
            "creation_date": pl.String,
            "metadata": metadata,
        },
    }


def stable_id(room_id: str, kind: str, key: str) -> str:
    return str(uuid.uuid5(EXPORT_NAMESPACE, f"{room_id}/{kind}/{key}"))


def _period(moment: datetime | None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).date().isoformat()


def _report_parts(report: CommunityReport) -> tuple[list[dict[str, str]], str]:
    """(findings, rating explanation): the writer's "Rating" finding is the explanation."""
    findings = []
    explanation = ""
    for finding in report.findings:
        summary = str(finding.get("summary", ""))
        detail = str(finding.get("explanation", ""))
        if summary == RATING_FINDING and not explanation:
            explanation = detail
        else:
            findings.append({"summary": summary, "explanation": detail})
    if not explanation:
        explanation = (
            "Impact rank from the weight of the community's relationships and its mentions."
        )
    return findings, explanation


def _full_content(report: CommunityReport, findings: Sequence[dict[str, str]]) -> str:
    parts = [f"# {report.title}", "", report.summary]
    for finding in findings:
        parts += ["", f"## {finding['summary']}", "", finding["explanation"]]
    return "\n".join(parts).rstrip() + "\n"


def _number_communities(
    communities: Sequence[Community], reports: Sequence[CommunityReport]
) -> dict[str, int]:
    ordered = sorted(communities, key=lambda c: (c.level, -len(c.entity_names), c.id))
    numbers = {c.id: n for n, c in enumerate(ordered)}
    for report in sorted(reports, key=lambda r: (r.level, r.community_id)):
        numbers.setdefault(report.community_id, len(numbers))  # a report without community
    return numbers


def _write(frame: Any, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    frame.write_parquet(partial)
    os.replace(partial, path)


async def export_room(platform: Platform, room_id: str, out_dir: Path | str) -> dict[str, int]:
    """Write the room's GraphRAG tables into ``out_dir`` (created); returns rows per table."""
    import polars as pl

    async with platform.session() as session:
        room = await get_room(session, room_id)
        key = str(room.id)
        messages, artifacts = await load_room_sources(session, room.id)
        first_message_at = (
            await session.execute(
                select(func.min(Message.created_at)).where(
                    Message.room_id == room.id, Message.deleted_at.is_(None)
                )
            )
        ).scalar()
        artifact_rows = await session.execute(
            select(Artifact.id, Artifact.created_at).where(Artifact.room_id == room.id)
        )
        artifact_created = {str(aid): created for aid, created in artifact_rows.tuples()}
    graph = await platform.graph.get_graph(key)
    communities = await platform.graph.get_communities(key)
    reports = await platform.graph.get_reports(key)
    chunks = await room_chunks(platform, key)

    # entities and relationships
    entities = sorted(graph.entities, key=lambda e: e.name)
    entity_id = {e.name: stable_id(key, "entity", e.name) for e in entities}
    title = {e.name: e.display_name for e in entities}
    relationships = sorted(
        (r for r in graph.relationships if r.source in entity_id and r.target in entity_id),
        key=lambda r: (r.source, r.target),
    )
    relationship_id = {
        r.pair: stable_id(key, "relationship", f"{r.source}\x1f{r.target}") for r in relationships
    }
    degree: dict[str, int] = defaultdict(int)
    for r in relationships:
        degree[r.source] += 1
        degree[r.target] += 1
    entity_rows = [
        {
            "id": entity_id[e.name],
            "human_readable_id": n,
            "title": e.display_name,
            "type": e.type,
            "description": e.description,
            "text_unit_ids": list(e.source_chunk_ids),
            "frequency": len(e.source_chunk_ids),
            "degree": degree[e.name],
        }
        for n, e in enumerate(entities)
    ]
    relationship_rows = [
        {
            "id": relationship_id[r.pair],
            "human_readable_id": n,
            "source": title[r.source],
            "target": title[r.target],
            "description": r.description,
            "weight": float(r.weight),
            "combined_degree": degree[r.source] + degree[r.target],
            "text_unit_ids": list(r.source_chunk_ids),
        }
        for n, r in enumerate(relationships)
    ]

    # communities and reports
    numbers = _number_communities(communities, reports)
    by_id = {c.id: c for c in communities}
    report_of = {r.community_id: r for r in reports}
    children: dict[str, list[int]] = defaultdict(list)
    for c in communities:
        if c.parent_id is not None:
            children[c.parent_id].append(numbers[c.id])

    def parent_of(community_id: str) -> int:
        community = by_id.get(community_id)
        if community is None or community.parent_id is None:
            return -1
        return numbers.get(community.parent_id, -1)

    community_rows = []
    for c in sorted(communities, key=lambda c: numbers[c.id]):
        members = [name for name in c.entity_names if name in entity_id]
        inside = set(members)
        internal = [r for r in relationships if r.source in inside and r.target in inside]
        report = report_of.get(c.id)
        community_rows.append(
            {
                "id": stable_id(key, "community", c.id),
                "human_readable_id": numbers[c.id],
                "community": numbers[c.id],
                "level": c.level,
                "parent": parent_of(c.id),
                "children": sorted(children.get(c.id, [])),
                "title": f"Community {numbers[c.id]}",
                "entity_ids": [entity_id[name] for name in sorted(members)],
                "relationship_ids": sorted(relationship_id[r.pair] for r in internal),
                "text_unit_ids": sorted({cid for r in internal for cid in r.source_chunk_ids}),
                "period": _period(report.generated_at if report else None),
                "size": len(members),
            }
        )
    sizes = {row["community"]: row["size"] for row in community_rows}
    report_rows = []
    for rep in sorted(reports, key=lambda x: numbers[x.community_id]):
        number = numbers[rep.community_id]
        findings, explanation = _report_parts(rep)
        report_rows.append(
            {
                "id": stable_id(key, "community_report", rep.community_id),
                "human_readable_id": number,
                "community": number,
                "level": rep.level,
                "parent": parent_of(rep.community_id),
                "children": sorted(children.get(rep.community_id, [])),
                "title": rep.title,
                "summary": rep.summary,
                "full_content": _full_content(rep, findings),
                "rank": float(rep.rank),
                "rating_explanation": explanation,
                "findings": findings,
                "full_content_json": json.dumps(
                    {
                        "title": rep.title,
                        "summary": rep.summary,
                        "findings": findings,
                        "rating": float(rep.rank),
                        "rating_explanation": explanation,
                    },
                    indent=4,
                    ensure_ascii=False,
                ),
                "period": _period(rep.generated_at),
                "size": sizes.get(number, 0),
            }
        )

    # documents and text units
    conversation_id = stable_id(key, "document", "conversation")
    live_artifacts = {a.id: a for a in artifacts}
    document_of: dict[str, str] = {}
    for chunk in chunks:
        source = chunk.artifact_id
        document_of[chunk.id] = (
            conversation_id if source is None else stable_id(key, "document", f"artifact/{source}")
        )
    entities_in: dict[str, list[str]] = defaultdict(list)
    for e in entities:
        for cid in dict.fromkeys(e.source_chunk_ids):
            entities_in[cid].append(entity_id[e.name])
    relationships_in: dict[str, list[str]] = defaultdict(list)
    for r in relationships:
        for cid in dict.fromkeys(r.source_chunk_ids):
            relationships_in[cid].append(relationship_id[r.pair])
    text_unit_rows = [
        {
            "id": chunk.id,
            "human_readable_id": n,
            "text": chunk.text,
            "n_tokens": chunk.n_tokens,
            "document_ids": [document_of[chunk.id]],
            "entity_ids": entities_in.get(chunk.id, []),
            "relationship_ids": relationships_in.get(chunk.id, []),
            "covariate_ids": [],
        }
        for n, chunk in enumerate(chunks, start=1)
    ]
    units_of: dict[str, list[str]] = defaultdict(list)
    for chunk in chunks:
        units_of[document_of[chunk.id]].append(chunk.id)

    documents: list[dict[str, Any]] = []
    if messages or conversation_id in units_of:
        documents.append(
            {
                "id": conversation_id,
                "title": f"{room.name} (conversation)",
                "text": "\n".join(f"{m.speaker}: {m.content}" for m in messages),
                "creation_date": (first_message_at or room.created_at).isoformat(),
                "metadata": {"room_id": key, "source": "conversation", "artifact_id": None},
            }
        )
    artifact_ids = list(live_artifacts) + sorted(
        {c.artifact_id for c in chunks if c.artifact_id and c.artifact_id not in live_artifacts}
    )
    for artifact_key in artifact_ids:
        artifact = live_artifacts.get(artifact_key)
        doc_id = stable_id(key, "document", f"artifact/{artifact_key}")
        created = artifact_created.get(artifact_key)
        documents.append(
            {
                "id": doc_id,
                # An artifact deleted since the last materialization keeps its chunks' text.
                "title": artifact.title if artifact else f"artifact {artifact_key} (deleted)",
                "text": artifact.content
                if artifact
                else "\n".join(c.text for c in chunks if c.artifact_id == artifact_key),
                "creation_date": created.isoformat() if created else None,
                "metadata": {"room_id": key, "source": "artifact", "artifact_id": artifact_key},
            }
        )
    document_rows = [
        {**doc, "human_readable_id": n, "text_unit_ids": units_of.get(doc["id"], [])}
        for n, doc in enumerate(documents, start=1)
    ]

    tables = {
        "entities": entity_rows,
        "relationships": relationship_rows,
        "communities": community_rows,
        "community_reports": report_rows,
        "text_units": text_unit_rows,
        "documents": document_rows,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, schema in _schemas().items():
        rows = tables[name]
        frame = pl.from_dicts(rows, schema=schema) if rows else pl.DataFrame(schema=schema)
        _write(frame.select(list(schema)), out / f"{name}.parquet")
        counts[name] = frame.height
    return counts
