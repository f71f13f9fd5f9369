"""Slice-suggestion rules tried on ``train`` cases only, in the annotate-next loop.

    python -m benchmarks.next_rules --cases 6 --spreads 0 1 2
    python -m benchmarks.next_rules --summary

Each case starts from 2 evenly spread slices and one round of ``crii``; then each rule adds 2
slices per round for ``--rounds`` rounds, training again from the last model (warm start), as
the annotate-next protocol of :mod:`benchmarks.real_data` does on ``test``. The rules: ``even``
(farthest from every annotated slice, inside the structure's true extent) and ``suggested``
at each ``--spreads`` value (the model's hardness ranking, picks weighted by distance to the
annotated slices to that power, see :func:`training_backend.inference.suggest_slices`).
Appends one row per case, rule and round to ``benchmarks/results/next-rules.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks.cases import AXIAL, data_available, load_case, split_names
from benchmarks.protocols import SETTINGS, next_round, pick_slices
from benchmarks.real_data import RESULTS, load_rates, machine
from benchmarks.runs import score
from benchmarks.stats import paired_difference
from training_backend.simulate import spread_slices

OUT = RESULTS / "next-rules.jsonl"


def rule_name(strategy: str, spread: float) -> str:
    return strategy if strategy == "even" else f"suggested-spread-{spread:g}"


def run_case(name: str, rules: list[tuple[str, float]], rounds: int, iterations: int,
             seed: int, scratch: Path) -> list[dict]:  # fmt: skip
    """Every rule's chain of rounds on one case, from the same first round."""
    case = load_case(name)
    first = spread_slices(case.truth, AXIAL, 2)
    start = next_round(case, first, iterations, seed, None, scratch / "start")
    rows = [_row(case, "start", 0, first, start, iterations, seed)]
    for strategy, spread in rules:
        rng = np.random.default_rng(seed)
        slices, previous = list(first), start
        for index in range(1, rounds + 1):
            slices = slices + pick_slices(strategy, case, slices, previous, rng, spread)
            label = rule_name(strategy, spread)
            warm = previous["trained"].model_path
            previous = next_round(case, slices, iterations, seed, warm, scratch / f"{label}{index}")
            rows.append(_row(case, label, index, slices, previous, iterations, seed))
    return rows


def _row(case, rule, index, slices, result, iterations, seed) -> dict:
    case_score = score(result["predicted"].labels, case)
    return {"case": case.name, "rule": rule, "round": index, "slices": sorted(slices),
            "annotated": len(slices), "iterations": iterations, "seed": seed,
            **case_score, "machine": machine()}  # fmt: skip


def summary(rows: list[dict]) -> str:
    """One table per seed and round length (iterations): mean Dice per rule and round, and
    each rule minus ``even`` per case (95% CI). A case run twice alike counts once (the last)."""
    groups: dict[tuple[int, int], list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row.get("seed", 0), row.get("iterations", 0))].append(row)
    return "\n\n".join(_table(group, seed, iterations)
                       for (seed, iterations), group in sorted(groups.items()))  # fmt: skip


def _table(rows: list[dict], seed: int, iterations: int) -> str:
    dice: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for row in rows:
        dice[(row["rule"], row["round"])][row["case"]] = row["mean_dice"]
    rules = sorted({rule for rule, index in dice if index > 0})
    rounds = sorted({index for _, index in dice if index > 0})
    lines = ["| rule | " + " | ".join(f"round {i}" for i in rounds) + " |",
             "|---" * (len(rounds) + 1) + "|"]  # fmt: skip
    for rule in rules:
        cells = []
        for index in rounds:
            values = dice.get((rule, index), {})
            cell = f"{statistics.fmean(values.values()):.3f}" if values else "–"
            even = dice.get(("even", index), {})
            shared = sorted(set(values) & set(even))
            if rule != "even" and len(shared) >= 2:
                diff = paired_difference([values[c] for c in shared], [even[c] for c in shared])
                cell += (f" ({diff.mean:+.3f} [{diff.ci_low:+.3f}, {diff.ci_high:+.3f}], "
                         f"{diff.wins}/{diff.losses})")  # fmt: skip
            cells.append(cell)
        lines.append(f"| {rule} | " + " | ".join(cells) + " |")
    cases = len({row["case"] for row in rows})
    return (
        f"{cases} train cases, seed {seed}, {iterations} iterations per round; mean Dice "
        "after each round (rule − even per case: mean, 95% bootstrap CI, wins/losses)\n\n"
        + "\n".join(lines)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--first-case", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--spreads", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    budget = SETTINGS["full"].next_budget_seconds
    parser.add_argument("--budget-seconds", type=float, default=budget,
                        help="round length, turned into crii iterations by the full setting's "
                        "stored rates (as the annotate-next protocol does)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--summary", action="store_true", help="print the table and stop")
    args = parser.parse_args(argv)
    if args.summary:
        rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
        print(summary(rows))
        return 0
    if not data_available():
        print("the hippocampus data is not beside the repository", file=sys.stderr)
        return 2
    rates = load_rates(RESULTS / "full", SETTINGS["full"], False, False, stored_only=True)
    iterations = rates.iterations("crii", args.budget_seconds)
    rules = [("even", 0.0)] + [("suggested", spread) for spread in args.spreads]
    names = split_names("train")[args.first_case : args.first_case + args.cases]
    made = []
    for name in names:
        with tempfile.TemporaryDirectory() as scratch:
            rows = run_case(name, rules, args.rounds, iterations, args.seed, Path(scratch))
        with open(args.out, "a") as stream:
            stream.writelines(json.dumps(row) + "\n" for row in rows)
        made += rows
        last = {row["rule"]: row["mean_dice"] for row in rows if row["round"] == args.rounds}
        print(name, last, file=sys.stderr, flush=True)
    print(summary(made))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
