"""The LLM path: one provider for chat (structured outputs) and embeddings, with a persistent
cache, one concurrency limit, retries and usage accounting."""

from knowledge.llm.provider import LLMError, LLMProvider, Usage

__all__ = ["LLMError", "LLMProvider", "Usage"]
