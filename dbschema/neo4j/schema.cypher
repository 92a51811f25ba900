// Neo4j schema of the graph store (knowledge/stores/neo4j_graph.py), applied by
// Neo4jGraphStore.ensure_schema() once per process and database. Idempotent: every statement
// is IF NOT EXISTS. Statements are separated by ";" at the end of a line.
//
// Model (every node and relationship carries room_id; nothing crosses rooms):
//   (:Entity {room_id, name, display_name, type, description, source_chunk_ids, mentions, fp})
//   (:Entity)-[:RELATED {room_id, weight, description, source_chunk_ids, fp}]->(:Entity)
//       one relationship per entity pair, stored from source to target as given (source < target)
//   fp: a fingerprint of the other properties (re-writes skip unchanged rows)
//   (:Community {room_id, id, level, parent_id, entity_names})
//   (:Report {room_id, community_id, level, title, summary, findings (JSON text), rank,
//             content_hash, source_chunk_ids, generated_at (datetime)})
//
// Composite property uniqueness constraints are available in Neo4j Community 5; each one is
// backed by a composite range index on (room_id, key), used by every MERGE and lookup.

CREATE CONSTRAINT entity_room_name IF NOT EXISTS
FOR (e:Entity) REQUIRE (e.room_id, e.name) IS UNIQUE;

CREATE CONSTRAINT community_room_id IF NOT EXISTS
FOR (c:Community) REQUIRE (c.room_id, c.id) IS UNIQUE;

CREATE CONSTRAINT report_room_community IF NOT EXISTS
FOR (r:Report) REQUIRE (r.room_id, r.community_id) IS UNIQUE;

// Room scans: counts, wipes, whole-room reads.
CREATE INDEX entity_room IF NOT EXISTS FOR (e:Entity) ON (e.room_id);

CREATE INDEX community_room IF NOT EXISTS FOR (c:Community) ON (c.room_id);

CREATE INDEX report_room IF NOT EXISTS FOR (r:Report) ON (r.room_id);

CREATE INDEX related_room IF NOT EXISTS FOR ()-[r:RELATED]-() ON (r.room_id);
