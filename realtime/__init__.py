"""The event bus: room change events appended to the Redis stream ``graphrag:events``."""
