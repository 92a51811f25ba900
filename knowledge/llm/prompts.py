"""Prompt texts. Changing one changes cache keys, so the affected calls are made again."""

from __future__ import annotations

from collections.abc import Sequence

BEGIN = "-----BEGIN TEXT-----"
END = "-----END TEXT-----"
PROMPT_VERSION = "v1"

Messages = list[dict[str, str]]


def extraction(text: str, entity_types: Sequence[str]) -> Messages:
    return [
        {
            "role": "system",
            "content": (
                "You extract a knowledge graph from a chat conversation or a document. "
                f"Entity types: {', '.join(entity_types)}. For each entity give its name as "
                "written, its type and a one-sentence description from the text. For each pair "
                "of clearly related entities give source, target (entity names), a description "
                "and a strength from 1 to 10. Only use entities you listed. In a chat, the name "
                "before ':' is who speaks: include a speaker as an entity only where the text "
                "says something about them, and do not relate speakers to what they mention."
            ),
        },
        {"role": "user", "content": f"{BEGIN}\n{text}\n{END}"},
    ]


def gleaning(text: str, entity_types: Sequence[str], found: Sequence[str]) -> Messages:
    messages = extraction(text, entity_types)
    messages.append(
        {
            "role": "user",
            "content": "Entities already found: "
            + ", ".join(found)
            + ". List only entities and relationships that were MISSED.",
        }
    )
    return messages


def summarize_entity(name: str, descriptions: Sequence[str]) -> Messages:
    listed = "\n".join(f"- {d}" for d in sorted(descriptions))
    return [
        {
            "role": "system",
            "content": "Merge the descriptions of one entity into one concise, consistent "
            "description (at most three sentences), in the third person.",
        },
        {"role": "user", "content": f"Entity: {name}\nDescriptions:\n{listed}"},
    ]


def community_report(context: str) -> Messages:
    return [
        {
            "role": "system",
            "content": (
                "You write a report on a community of entities from a conversation: a short "
                "title naming its key entities, a summary, 3-6 findings each with an "
                "explanation grounded in the data, and an importance rating from 0 to 10 "
                "with its explanation."
            ),
        },
        {"role": "user", "content": f"{BEGIN}\n{context}\n{END}"},
    ]


def map_key_points(question: str, report: str) -> Messages:
    return [
        {
            "role": "system",
            "content": "From the report, list the key points that help answer the question, "
            "each with a score 0-100 for how much it helps (0 = not at all).",
        },
        {"role": "user", "content": f"Question: {question}\n{BEGIN}\n{report}\n{END}"},
    ]


def answer(question: str, context: str) -> Messages:
    return [
        {
            "role": "system",
            "content": "Answer the question from the numbered context only. Cite the numbers "
            "of the items you used in `sources`. If the context does not answer it, say so.",
        },
        {"role": "user", "content": f"Question: {question}\n{BEGIN}\n{context}\n{END}"},
    ]


STREAMED_ANSWER = (
    "Answer the question from the numbered context only, in plain text. Cite the items you "
    "used by their numbers in brackets, like [2]. If the context does not answer it, say so."
)


def streamed_answer(question: str, context: str) -> Messages:
    """``answer`` for a streamed reply: plain text with [n] citations instead of JSON."""
    return [
        {"role": "system", "content": STREAMED_ANSWER},
        {"role": "user", "content": f"Question: {question}\n{BEGIN}\n{context}\n{END}"},
    ]


def route(question: str) -> Messages:
    return [
        {
            "role": "system",
            "content": "Classify a question about a conversation: 'global' if it asks about "
            "the conversation as a whole (themes, summary, main topics), 'local' if it asks "
            "about specific people, things, places or events.",
        },
        {"role": "user", "content": question},
    ]


def rerank(question: str, passages: Sequence[str]) -> Messages:
    numbered = "\n".join(f"[{i}] {p}" for i, p in enumerate(passages))
    return [
        {
            "role": "system",
            "content": (
                "You rank chat messages by how useful each is for answering a question about "
                "the conversation. A message is useful when it states the answer or a fact the "
                "answer needs. Return the numbers of the useful messages, best first."
            ),
        },
        {"role": "user", "content": f"Question: {question}\n\n{BEGIN}\n{numbered}\n{END}"},
    ]


def same_entity(a: str, a_description: str, b: str, b_description: str) -> Messages:
    return [
        {
            "role": "system",
            "content": (
                "Two names were extracted from one chat room. Decide whether they refer to the "
                "same person, organization, place or thing (an alias, nickname, abbreviation or "
                "spelling variant), using their descriptions."
            ),
        },
        {"role": "user", "content": f"A: {a} — {a_description}\nB: {b} — {b_description}"},
    ]
