"""Query planning and offline rerank features that need no service: clause decomposition of
multi-hop questions, dates that name a thing (a boost, not a filter), the clause-aware coverage
of the offline reranker, and name-only messages."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

from knowledge.lexical import analyze
from knowledge.retrieval.fusion import Fused
from knowledge.retrieval.query import plan_query, split_clauses
from knowledge.retrieval.rerank import OfflineReranker, RerankItem
from knowledge.retrieval.timeparse import parse_time_intent
from knowledge.retrieval.units import Unit

END = datetime(2026, 5, 22, 12, 0, tzinfo=UTC)


def test_a_two_sentence_question_is_split_into_its_clauses() -> None:
    clauses = split_clauses(
        "Marcius names two of the people's new tribunes. What do those two later plan?"
    )
    assert clauses == [
        analyze("Marcius names two of the people's new tribunes"),
        analyze("What do those two later plan"),
    ]


def test_a_comma_and_question_word_open_a_clause() -> None:
    clauses = split_clauses("Who is leading the map rewrite, and what will it cost per month?")
    assert len(clauses) == 2
    assert "cost" in clauses[1] and "cost" not in clauses[0]


def test_a_one_clause_question_has_no_clauses() -> None:
    assert split_clauses("What caused the webhook backlog on April 14?") == []
    # A clause of one term is no sub-query of its own.
    assert split_clauses("The Volscian who swore to fight Marcius - where is he?") == []


def test_plan_carries_the_clauses() -> None:
    plan = plan_query("Who owns billing? And what did they change?", set(), {}, [], END)
    assert plan.clauses == [] or all(len(set(c)) >= 2 for c in plan.clauses)
    plan = plan_query(
        "Which vendor did we pick for carriers, and what does it charge per event?",
        set(),
        {},
        [],
        END,
    )
    assert len(plan.clauses) == 2


def test_a_date_that_names_a_thing_is_attributive() -> None:
    for question in (
        "Who owns the service that caused the April 14 webhook outage now?",
        "What did the May 4 load test rerun leave behind?",
        "What error did the model that went live on May 11 get on the holdout set?",
    ):
        intent = parse_time_intent(question, END)
        assert intent.has_window and intent.attributive, question


def test_a_date_that_says_when_is_a_filter() -> None:
    for question in (
        "What actually caused the webhook backlog on April 14?",
        "What did we agree during the week of April 20?",
        "What did yesterday's retro decide about the maps?",
        "What did we decide last week about on-call?",
    ):
        intent = parse_time_intent(question, END)
        assert intent.has_window and not intent.attributive, question


def _item(uid: str, text: str, prior: float, speaker: str = "Someone") -> RerankItem:
    unit = Unit(uid, "message", uid[2:], speaker, None, text)
    return RerankItem(fused=Fused(uid, prior), unit=unit)


def test_a_message_that_answers_one_clause_fully_beats_one_touching_both_a_little() -> None:
    question = "Who replaced the poller last spring? What does the aggregator charge per event?"
    plan = plan_query(question, set(), {}, [], END)
    assert plan.clauses
    idf = {t: 2.0 for t in plan.terms}
    reranker = OfflineReranker(idf)
    items = [
        # Two terms of each clause: more of the whole question…
        _item("m:1", "The poller was replaced, and the aggregator charges.", 0.02),
        # … than three of the second clause alone, which answer it.
        _item("m:2", "The aggregator charges $0.004 an event.", 0.02),
    ]
    scores = asyncio.run(reranker.scores(plan, items))
    assert scores[1] > scores[0]
    as_one_clause = asyncio.run(reranker.scores(replace(plan, clauses=[]), items))
    assert as_one_clause[0] > as_one_clause[1]


def test_a_speech_cue_counts_in_the_clause_that_names_the_speaker() -> None:
    """ "What did Taylor say" asks for Taylor's words; "Marcius names two tribunes. What do those
    two plan to tell the people?" asks about Marcius, the cue belonging to the tribunes."""

    def speech(question: str, speakers: list[str], names: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
        return plan_query(question, set(names), {}, speakers, END).speech

    assert speech("What did Taylor say about the launch?", ["Taylor Cruz"])
    assert speech("According to Priya, when is the launch?", ["Priya Natarajan"])
    # A speaker named by an alias of their entity.
    plan = plan_query(
        "Marcius left. What did TC tell the merchants?",
        {"taylor cruz"},
        {"tc": "taylor cruz"},
        ["Taylor Cruz"],
        END,
    )
    assert plan.speakers == ["Taylor Cruz"] and plan.speech
    assert not speech(
        "Marcius names two of the people's tribunes. What do those two plan to tell the people?",
        ["Marcius"],
        {"marcius"},
    )
    # No speaker named: any cue (the speaker weight does not apply then).
    assert speech("Who said the launch moves?", [])
    assert not speech("What did Taylor decide about the launch?", ["Taylor Cruz"])
