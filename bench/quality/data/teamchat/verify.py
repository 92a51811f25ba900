"""Check the teamchat golden set.

    python bench/quality/data/teamchat/verify.py            # mechanical checks only
    python bench/quality/data/teamchat/verify.py --show     # + every question with its gold messages
    python bench/quality/data/teamchat/verify.py --show --candidates 5
        # + the 5 non-gold messages sharing the most words with question+answer, to look for
        #   messages that would answer a question as well as its gold (a reading aid only)

Exits non-zero if a mechanical check fails.
"""

import argparse
import json
import re
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
MIN_KIND = {"single-hop": 22, "multi-hop": 18, "temporal": 18, "alias": 15, "global": 10}
STOP = set(
    "a an the of to in on at for and or is are was were be been did do does what which who whom when "
    "how why we our us it its that this with from by as after before about any have has had there their "
    "they them he she his her i you your get got much many up out".split()
)


def load(name):
    rows = []
    for i, line in enumerate((HERE / name).read_text(encoding="utf-8").splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            sys.exit(f"{name}:{i}: invalid JSON: {e}")
    return rows


def words(s):
    return {w for w in re.findall(r"[a-z0-9$.%]+", s.lower()) if w not in STOP and len(w) > 1}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--show", action="store_true")
    ap.add_argument("--candidates", type=int, default=0)
    args = ap.parse_args()

    msgs, arts, qs = load("transcript.jsonl"), load("artifacts.jsonl"), load("questions.jsonl")
    errors = []
    by_n = {}
    prev = None
    for i, m in enumerate(msgs, 1):
        if set(m) != {"n", "speaker", "kind", "time", "text"}:
            errors.append(f"message line {i}: keys {sorted(m)}")
        if m.get("n") != i:
            errors.append(f"message line {i}: n={m.get('n')}")
        if m.get("kind") not in ("human", "agent"):
            errors.append(f"message {i}: kind={m.get('kind')}")
        t = datetime.fromisoformat(m["time"])
        if t.tzinfo is None:
            errors.append(f"message {i}: time without offset")
        if prev and t < prev:
            errors.append(f"message {i}: time goes backwards")
        prev = t
        if not m.get("text", "").strip():
            errors.append(f"message {i}: empty text")
        by_n[m["n"]] = m
    first, last = datetime.fromisoformat(msgs[0]["time"]), datetime.fromisoformat(msgs[-1]["time"])
    span_days = (last - first).days
    if len(msgs) < 320:
        errors.append(f"only {len(msgs)} messages")
    if span_days < 42:
        errors.append(f"span only {span_days} days")
    for a in arts:
        if set(a) != {"title", "time", "content"}:
            errors.append(f"artifact keys {sorted(a)}")
        datetime.fromisoformat(a["time"])
    if not 2 <= len(arts) <= 4:
        errors.append(f"{len(arts)} artifacts")

    kinds = Counter()
    ids = set()
    for q in qs:
        if set(q) != {"id", "kind", "question", "gold", "answer", "note"}:
            errors.append(f"{q.get('id')}: keys {sorted(q)}")
        if q["id"] in ids:
            errors.append(f"duplicate id {q['id']}")
        ids.add(q["id"])
        kinds[q["kind"]] += 1
        if not q["gold"]:
            errors.append(f"{q['id']}: empty gold")
        if len(set(q["gold"])) != len(q["gold"]):
            errors.append(f"{q['id']}: duplicate gold")
        for n in q["gold"]:
            if n not in by_n:
                errors.append(f"{q['id']}: gold {n} does not exist")
        if q["kind"] == "multi-hop" and len(q["gold"]) < 2:
            errors.append(f"{q['id']}: multi-hop with one gold message")
        if q["kind"] == "global" and not 2 <= len(q["gold"]) <= 6:
            errors.append(f"{q['id']}: global with {len(q['gold'])} gold messages")
    for k, need in MIN_KIND.items():
        if kinds[k] < need:
            errors.append(f"kind {k}: {kinds[k]} < {need}")
    unknown = set(kinds) - set(MIN_KIND)
    if unknown:
        errors.append(f"unknown kinds {unknown}")

    humans = sorted({m["speaker"] for m in msgs if m["kind"] == "human"})
    agents = sorted({m["speaker"] for m in msgs if m["kind"] == "agent"})
    days = sorted({m["time"][:10] for m in msgs})
    gold_all = sorted({n for q in qs for n in q["gold"]})
    print(
        f"messages: {len(msgs)}  days with messages: {len(days)}  span: {msgs[0]['time'][:10]} .. "
        f"{msgs[-1]['time'][:10]} ({span_days} days)"
    )
    print(f"humans ({len(humans)}): {', '.join(humans)}")
    print(f"agents ({len(agents)}): {', '.join(agents)}")
    print(f"artifacts: {len(arts)}  questions: {len(qs)}  per kind: {dict(sorted(kinds.items()))}")
    print(
        f"distinct gold messages: {len(gold_all)}; gold by quarter of the timeline: "
        f"{[sum(1 for n in gold_all if (k * len(msgs)) // 4 < n <= ((k + 1) * len(msgs)) // 4) for k in range(4)]}"
    )

    if args.show:
        for q in qs:
            print("\n" + "=" * 100)
            print(f"{q['id']} [{q['kind']}] {q['question']}")
            print(f"  answer: {q['answer']}")
            print(f"  note:   {q['note']}")
            for n in q["gold"]:
                m = by_n[n]
                print(f"  #{n} {m['time'][:16]} {m['speaker']}: {m['text']}")
            if args.candidates:
                qw = words(q["question"] + " " + q["answer"])
                scored = sorted(
                    ((len(qw & words(m["text"])), m["n"]) for m in msgs if m["n"] not in q["gold"]),
                    reverse=True,
                )[: args.candidates]
                for s, n in scored:
                    m = by_n[n]
                    print(f"    ? #{n} ({s}) {m['time'][:16]} {m['speaker']}: {m['text'][:160]}")

    if errors:
        print("\nFAILED:")
        for e in errors:
            print("  " + e)
        sys.exit(1)
    print("\nall mechanical checks passed")


if __name__ == "__main__":
    main()
