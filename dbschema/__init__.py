"""Schemas of every store: PostgreSQL (SQLAlchemy models + Alembic migrations), Neo4j, Qdrant."""
