"""Check questions.jsonl against the bundled Coriolanus sample.

Usage (from the repository root):
    python bench/quality/data/coriolanus/verify.py          # mechanical checks
    python bench/quality/data/coriolanus/verify.py --show   # also print every question with its gold lines
"""

import collections
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[3]
SOURCE = ROOT / "knowledge" / "sample_data" / "coriolanus.jsonl"
QUESTIONS = HERE / "questions.jsonl"
MINIMUMS = {"single-hop": 15, "multi-hop": 10, "alias": 10, "global": 8}
FIELDS = {"id", "kind", "question", "gold", "answer", "note"}


def main() -> int:
    lines = [
        json.loads(line) for line in SOURCE.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    n = len(lines)
    errors = []
    ids = set()
    kinds = collections.Counter()
    covered = set()
    questions = []
    for ln, raw in enumerate(QUESTIONS.read_text(encoding="utf-8").splitlines(), 1):
        try:
            q = json.loads(raw)
        except json.JSONDecodeError as e:
            errors.append(f"line {ln}: invalid JSON ({e})")
            continue
        questions.append(q)
        if set(q) != FIELDS:
            errors.append(f"line {ln}: fields {sorted(q)} != {sorted(FIELDS)}")
        if q.get("id") in ids:
            errors.append(f"line {ln}: duplicate id {q.get('id')}")
        ids.add(q.get("id"))
        if q.get("kind") not in MINIMUMS:
            errors.append(f"line {ln}: unknown kind {q.get('kind')}")
        kinds[q.get("kind")] += 1
        gold = q.get("gold")
        if not isinstance(gold, list) or not gold:
            errors.append(f"line {ln}: gold must be a non-empty list")
            continue
        if len(set(gold)) != len(gold):
            errors.append(f"line {ln}: duplicate gold numbers")
        for g in gold:
            if not isinstance(g, int) or not 1 <= g <= n:
                errors.append(f"line {ln}: gold {g!r} outside 1..{n}")
        covered.update(g for g in gold if isinstance(g, int))
        if q.get("kind") == "multi-hop" and len(gold) < 2:
            errors.append(f"line {ln}: multi-hop needs 2+ gold")
        if q.get("kind") == "global" and not 2 <= len(gold) <= 6:
            errors.append(f"line {ln}: global gold should have 2-6 lines")
    for kind, minimum in MINIMUMS.items():
        if kinds[kind] < minimum:
            errors.append(f"kind {kind}: {kinds[kind]} < {minimum}")

    if "--show" in sys.argv:
        for q in questions:
            print(f"=== {q['id']} [{q['kind']}] {q['question']}")
            print(f"    answer: {q['answer']}")
            for g in q["gold"]:
                if isinstance(g, int) and 1 <= g <= n:
                    print(f"    #{g} {lines[g - 1]['speaker']}: {lines[g - 1]['text']}")
            print()

    thirds = [
        sum(1 for g in covered if lo < g <= hi)
        for lo, hi in ((0, n // 3), (n // 3, 2 * n // 3), (2 * n // 3, n))
    ]
    print(f"source lines: {n}; questions: {len(questions)}; kinds: {dict(kinds)}")
    print(
        f"distinct gold lines: {len(covered)}; by third of file: {thirds}; range {min(covered)}..{max(covered)}"
    )
    for e in errors:
        print("ERROR", e)
    print("OK" if not errors else f"{len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
