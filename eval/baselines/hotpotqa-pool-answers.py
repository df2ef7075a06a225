"""Pool the answer-strategy records of eval runs over disjoint questions of one slice (a slow model's slice run
in chunks that each fit the bench lock), and print the pooled table: means with bootstrap CIs and every pair
of strategies compared question by question, as the eval report does for one run.

    python eval/baselines/hotpotqa-pool-answers.py RUN.json [RUN.json ...] [--vs OLD.json ... --gold answers.jsonl]

--vs compares each strategy with an earlier run's answers to the same questions (several runs over disjoint
questions are pooled), rescored with today's scorer, so only what the model was asked differs: every strategy
of this run against every strategy of that one ("flare − earlier single"); --gold is the slice's answers.jsonl.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ragsvc.evals.answer_metrics import answer_match, exact_match, token_f1
from ragsvc.evals.answer_strategies import short_answer
from ragsvc.evals.stats import bootstrap_ci, paired_difference_ci, paired_permutation_test

METRICS = ("em", "f1", "match")


def mean_ci(values: list[float]) -> str:
    low, high = bootstrap_ci(values)
    return f"{sum(values) / len(values):.3f} [{low:.3f}, {high:.3f}]"


def pair_row(label: str, xs: list[dict], ys: list[dict]) -> str:
    cells = []
    for m in METRICS:
        a, b = [r[m] for r in xs], [r[m] for r in ys]
        low, high = paired_difference_ci(a, b)
        p = paired_permutation_test(a, b)
        cells.append(f"{(sum(b) - sum(a)) / len(a):+.3f} [{low:+.3f}, {high:+.3f}] (p={p:.3g})")
    return f"| {label} | " + " | ".join(cells) + " |"


def strategy_row(name: str, rs: list[dict]) -> str:
    support = [r["support_recall"] for r in rs if r["support_recall"] is not None]
    shown = f"{sum(support) / len(support):.3f}" if support else "–"
    retrievals = sum(r["retrievals"] for r in rs) / len(rs)
    tokens = sum(r["completion_tokens"] for r in rs) / len(rs)
    return (f"| {name} | " + " | ".join(mean_ci([r[m] for r in rs]) for m in METRICS) + f" | {shown} | "
            f"{retrievals:.2f} | {tokens:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--vs", type=Path, nargs="+")
    parser.add_argument("--gold", type=Path)
    args = parser.parse_args()
    runs = [json.loads(p.read_text()) for p in args.runs]
    strategies = list(runs[0]["answer"]["strategies"])
    records = {s: [r for run in runs for r in run["answer"]["strategies"][s]["per_example"]] for s in strategies}
    ids = [r["id"] for r in records[strategies[0]]]
    if len(set(ids)) != len(ids) or any([r["id"] for r in records[s]] != ids for s in strategies):
        raise SystemExit("the runs overlap or answer different questions per strategy")
    sizes = ", ".join(str(len(run["answer"]["strategies"][strategies[0]]["per_example"])) for run in runs)
    print(f"{len(ids)} questions ({sizes} per run; git {', '.join(run['git_sha'][:7] for run in runs)}; "
          f"model {runs[0]['llm']})\n")
    print("| strategy | EM [95% CI] | F1 [95% CI] | match [95% CI] | supporting recall | retrievals | answer tokens |")
    print("|---|---|---|---|---|---|---|")
    for s in strategies:
        print(strategy_row(s, records[s]))
    print("\n| paired over the same questions | Δ EM [CI] (p) | Δ F1 [CI] (p) | Δ match [CI] (p) |")
    print("|---|---|---|---|")
    for i, a in enumerate(strategies):
        for b in strategies[i + 1:]:
            print(pair_row(f"{b} vs {a}", records[a], records[b]))
    if "single" in records and "flare" in records:
        changed = [(x["id"], x["scored"], y["scored"]) for x, y in zip(records["single"], records["flare"], strict=True)
                   if x["scored"] != y["scored"]]
        again = sum(1 for r in records["flare"] if r["retrievals"] > 1)
        print(f"\nFLARE retrieved again on {again} of {len(ids)} questions; its scored answer differs from single's "
              f"on {len(changed)}: " + "; ".join(f"{i} {a!r} -> {b!r}" for i, a, b in changed))
    if args.vs and args.gold:
        compare_with_earlier(args.vs, args.gold, strategies, records, ids)


def compare_with_earlier(paths: list[Path], gold_path: Path, strategies: list[str], records: dict, ids: list[str]
                         ) -> None:
    runs = [json.loads(p.read_text())["answer"]["strategies"] for p in paths]
    before = {s: {"per_example": [r for run in runs for r in run.get(s, {}).get("per_example", [])]}
              for s in runs[0]}
    gold = {}
    for line in gold_path.read_text().splitlines():
        obj = json.loads(line)
        gold[obj["_id"]] = obj["answers"] if "answers" in obj else [obj["answer"]]

    def rescored(r: dict) -> dict:
        scored = short_answer(r["answer"])
        return {"em": exact_match(scored, gold[r["id"]]), "f1": token_f1(scored, gold[r["id"]]),
                "match": answer_match(scored, gold[r["id"]])}

    names = ", ".join(p.name for p in paths)
    print(f"\nAgainst {names} on the same questions (its answers rescored with today's scorer):\n")
    print("| this run's strategy − that run's | Δ EM [CI] (p) | Δ F1 [CI] (p) | Δ match [CI] (p) |")
    print("|---|---|---|---|")
    for s in strategies:
        for t in before:
            old = {r["id"]: r for r in before[t]["per_example"]}
            if all(i in old for i in ids):
                print(pair_row(f"{s} − earlier {t}", [rescored(old[i]) for i in ids], records[s]))


if __name__ == "__main__":
    main()
