"""The protocols of the real-data benchmark (issue: prove it on real data).

Each protocol yields one result row (a JSON-ready dict) per volume and configuration; the
runner (:mod:`benchmarks.real_data`) writes them as they come and skips rows already written,
so a long run can be interrupted and resumed without losing anything.

Equal wall-clock budget: every learned method gets ``budget_seconds * rate`` iterations, with
its rate (iterations per second) measured side by side with the others on the same machine
(:func:`calibrate`). A method that needs two passes per step pays for them, and the figures
do not depend on what else the machine was doing while the benchmark ran. The
equal-iteration comparison gives every method the iterations of ``supervised``.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from collections.abc import Iterator, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cases import AXIAL, Case, fully_labeled, load_case, painted, split_names
from benchmarks.runs import (
    INTERPOLATION_METHODS,
    Predicted,
    Trained,
    interpolate_case,
    make_config,
    predict_case,
    score,
    train_round,
)
from training_backend.annotations import SparseAnnotation
from training_backend.inference import suggest_slices
from training_backend.postprocess import blend_with_prior, keep_annotated_components
from training_backend.simulate import spread_slices
from training_backend.trainer import TrainingVolume

LEARNED = ("crii", "supervised", "mean-teacher")

ABLATIONS: dict[str, dict[str, Any]] = {
    "crii": {},
    "no-intra-prl": {"loss.lambda_intra": 0.0},
    "no-inter-prl": {"loss.lambda_inter": 0.0},
    "no-consistency": {"loss.lambda_cr_max": 0.0},
    "no-shape-prior": {"loss.use_prior": False},  # no prior in the target nor the late blend
    "no-late-prior-blend": {"predict.prior_blend": 0.0},
    "unaligned-prior": {"loss.prior_align": False},  # the plain blend between annotated slices
    "self-teacher": {"loss.teacher": "self"},
}
"""``crii`` with one part taken out (or swapped), at the iterations of ``crii``."""


@dataclass(frozen=True)
class Setting:
    """How much of the data, how many seeds and how long each round."""

    name: str
    test_cases: int
    seeds: tuple[int, ...]
    slice_counts: tuple[int, ...]
    budget_seconds: float
    ablation_cases: int
    next_cases: int
    next_rounds: int
    next_budget_seconds: float
    dataset_labeled: int
    dataset_eval_cases: int
    dataset_budget_seconds: float
    equal_iteration_counts: tuple[int, ...]
    """Slice counts at which the equal-iteration comparison is also run."""
    interactive_methods: tuple[str, ...] = LEARNED
    """The learned methods of the interactive protocol (interpolation always runs)."""
    shard: tuple[int, int] = (0, 1)
    """(index, count): this process takes every count-th test volume from index, so that
    several processes can share one GPU (the per-volume protocols only)."""


SETTINGS = {
    # quick: every protocol end to end in about 15 min, the same budget per round as full;
    # too few volumes for a verdict (the full setting gives those)
    "quick": Setting(
        name="quick",
        test_cases=2,
        seeds=(0,),
        slice_counts=(2, 3, 5),
        budget_seconds=15.0,
        ablation_cases=2,
        next_cases=1,
        next_rounds=3,
        next_budget_seconds=10.0,
        dataset_labeled=8,
        dataset_eval_cases=8,
        dataset_budget_seconds=30.0,
        equal_iteration_counts=(3,),
    ),
    # long: the interactive protocol at the product's default round of 60 s, k = 2 and 3,
    # crii against supervised (the baseline that 15 s rounds left undecided), and mean-teacher
    # (added after crii and supervised had run on all 52 volumes; a rerun fills its rows in)
    "long": Setting(
        name="long",
        test_cases=52,
        seeds=(0,),
        slice_counts=(2, 3),
        budget_seconds=60.0,
        ablation_cases=0,
        next_cases=0,
        next_rounds=0,
        next_budget_seconds=0.0,
        dataset_labeled=0,
        dataset_eval_cases=0,
        dataset_budget_seconds=0.0,
        equal_iteration_counts=(),
        interactive_methods=("crii", "supervised", "mean-teacher"),
    ),
    "full": Setting(
        name="full",
        test_cases=52,
        seeds=(0, 1, 2),
        slice_counts=(2, 3, 5),
        budget_seconds=15.0,
        ablation_cases=20,
        next_cases=20,
        next_rounds=3,
        next_budget_seconds=10.0,
        dataset_labeled=8,
        dataset_eval_cases=52,
        dataset_budget_seconds=300.0,
        equal_iteration_counts=(2, 3),
    ),
}
# gpu: the long setting's volumes, k and methods at 15 s rounds, with the rates of a GPU; meant
# for benchmarks/gpu_check.sh (shards share the GPU)
SETTINGS["gpu"] = dataclasses.replace(SETTINGS["long"], name="gpu", budget_seconds=15.0)


@dataclass
class Rates:
    """Per method: training iterations per second, and the fixed seconds a round costs before
    its first step (data preparation, the shape prior), measured side by side."""

    per_method: dict[str, float]
    setup_seconds: dict[str, float]
    case: str
    slices: int

    def iterations(self, method: str, seconds: float) -> int:
        """Iterations that fit in ``seconds`` of wall-clock time, setup included."""
        usable = seconds - self.setup_seconds[method]
        return max(1, round(self.per_method[method] * usable))

    def to_dict(self) -> dict[str, Any]:
        return {
            "iterations_per_second": {m: round(r, 3) for m, r in self.per_method.items()},
            "setup_seconds": {m: round(s, 3) for m, s in self.setup_seconds.items()},
            "case": self.case,
            "slices": self.slices,
        }


def calibrate(run_dir: Path, case_name: str, slice_count: int = 3, repeats: int = 3) -> Rates:
    """Time rounds of 50 and 300 iterations of each learned method, interleaved, ``repeats``
    times after a warm-up: the slope is the rate, the intercept the setup. Medians. Long
    rounds, because short ones let a method's warm-up and the machine's noise set its rate."""
    case = load_case(case_name)
    _, annotation = painted(case, spread_slices(case.truth, AXIAL, slice_count))
    volume = TrainingVolume(case.image, annotation, case.spacing, case.name)
    short, long = 50, 300
    rates: dict[str, list[float]] = {m: [] for m in LEARNED}
    setups: dict[str, list[float]] = {m: [] for m in LEARNED}
    for repeat in range(repeats + 1):
        for method in LEARNED:
            seconds = [
                train_round(make_config(method, n, 0), [volume], run_dir / "rate").train_seconds
                for n in (short, long)
            ]
            if repeat:  # the first pass warms caches and the allocator
                rate = (long - short) / max(seconds[1] - seconds[0], 1e-6)
                rates[method].append(rate)
                setups[method].append(max(0.0, seconds[0] - short / rate))
    return Rates(
        {m: round(statistics.median(v), 3) for m, v in rates.items()},
        {m: round(statistics.median(v), 3) for m, v in setups.items()},
        case_name,
        slice_count,
    )


KEY_FIELDS = ("protocol", "case", "method", "k", "seed", "budget", "strategy", "round")


def row_key(row: dict[str, Any]) -> tuple:
    """What identifies a row: a rerun skips rows whose key is already written."""
    return tuple(json.dumps(row.get(name)) for name in KEY_FIELDS)


def planned_key(protocol: str, case: str, method: str, **fields: Any) -> tuple:
    """The key :func:`row_key` will give the row these fields make."""
    return row_key({"protocol": protocol, "case": case, "method": method, **fields})


def _row(protocol: str, case: Case, method: str, **fields: Any) -> dict[str, Any]:
    return {"protocol": protocol, "case": case.name, "method": method, **fields}


def _learned_row(protocol, case, method, predicted, trained: Trained, **fields):
    return _row(
        protocol,
        case,
        method,
        iterations=trained.iterations,
        train_seconds=round(trained.train_seconds, 2),
        predict_seconds=round(predicted.seconds, 3),
        round_seconds=round(trained.train_seconds + predicted.seconds, 2),
        **fields,
        **score(predicted.labels, case),
    )


def test_volumes(setting: Setting, count: int) -> list[str]:
    """The first ``count`` test volumes, or this process's share of them (``setting.shard``)."""
    index, total = setting.shard
    return split_names("test")[:count][index::total]


def interactive(
    setting: Setting, rates: Rates, run_dir: Path, skip: Set[tuple] = frozenset()
) -> Iterator[dict[str, Any]]:
    """k annotated axial slices per test volume; every method at the same wall-clock budget,
    and at equal iterations for ``setting.equal_iteration_counts``; interpolation beside."""
    for name in test_volumes(setting, setting.test_cases):
        case = load_case(name)
        for k in setting.slice_counts:
            slices = spread_slices(case.truth, AXIAL, k)
            labels, annotation = painted(case, slices)
            common = {"k": k, "slices": slices}
            for method in INTERPOLATION_METHODS:
                predicted = interpolate_case(method, labels, annotation, case)
                yield _row("interactive", case, method, budget="none", seed=0, **common,
                           round_seconds=round(predicted.seconds, 3),
                           **score(predicted.labels, case))  # fmt: skip
            budgets = [("time", setting.budget_seconds)]
            if k in setting.equal_iteration_counts:
                budgets.append(("iterations", setting.budget_seconds))
            for seed in setting.seeds:
                for budget, seconds in budgets:
                    for method in setting.interactive_methods:
                        if budget == "iterations" and method == "supervised":
                            continue  # the same run as its equal-time one
                        derived = REFINISHED.get(method, {}) if budget == "time" else {}
                        keys = [planned_key("interactive", name, row_method, k=k, seed=seed,
                                            budget=budget)
                                for row_method in [method, *derived]]  # fmt: skip
                        if all(key in skip for key in keys):
                            continue  # a missing derived row needs its run again
                        paced = "supervised" if budget == "iterations" else method
                        iterations = rates.iterations(paced, seconds)
                        volume = TrainingVolume(case.image, annotation, case.spacing, case.name)
                        trained = train_round(make_config(method, iterations, seed), [volume],
                                              run_dir / "interactive")  # fmt: skip
                        predicted = predict_case(trained, case, annotation)
                        source = _learned_row(
                            "interactive",
                            case,
                            method,
                            predicted,
                            trained,
                            budget=budget,
                            seed=seed,
                            **common,
                        )
                        yield source
                        for row_method, class_split in derived.items():
                            yield _refinished(row_method, class_split, case, annotation,
                                              predicted, trained, source)  # fmt: skip


CLASS_SPLIT = 1.0
"""``predict.prior_class_split`` of the ``+class-split`` rows: the value chosen on 6 ``train``
cases (``benchmarks/results/tuning.jsonl``, variants ``long-iterations-k2`` and ``-k3``)."""

REFINISHED: dict[str, dict[str, float]] = {
    "crii": {"crii+prior-class-split": CLASS_SPLIT},
    "supervised": {
        "supervised+late-prior-blend": 0.0,
        "supervised+late-prior-blend+class-split": CLASS_SPLIT,
    },
}
"""Rows made from a run of a method (equal-time budget), finished another way: the
late blend with the shape prior at the method's ``predict.prior_blend``, then the prior's split
of the foreground among the classes at the given share (``predict.prior_class_split``). On a
resume a missing one is made from a new run of the method, which need not match the stored
row of the method (the runner warns when it differs), so each derived row keeps the Dice of
its own run unfinished (``source_method``, ``source_dice``, ``source_mean_dice``), the pair
the report compares."""


def _refinished(
    method: str,
    class_split: float,
    case: Case,
    annotation: SparseAnnotation,
    predicted: Predicted,
    trained: Trained,
    source: dict[str, Any],
) -> dict[str, Any]:
    """The network's probabilities of ``predicted`` averaged late with the shape prior (and
    split among the classes by it), as ``crii``'s final mask is. For ``supervised`` this is
    not a method of the paper: it shows how much of crii's lead the finishing makes. Its
    seconds are the run's prediction plus this finishing (for ``crii`` that counts one late
    blend twice, some milliseconds)."""
    start = time.perf_counter()
    probabilities = blend_with_prior(
        predicted.extra["probabilities"], annotation,
        trained.config.predict.prior_blend, case.spacing, trained.config.loss.prior_align,
        class_split,
    )  # fmt: skip
    labels = keep_annotated_components(probabilities.argmax(0).astype(np.uint8), annotation)
    predicted_seconds = predicted.seconds + time.perf_counter() - start
    return _row("interactive", case, method, budget="time", seed=source["seed"],
                iterations=trained.iterations, train_seconds=round(trained.train_seconds, 2),
                predict_seconds=round(predicted_seconds, 3),
                round_seconds=round(trained.train_seconds + predicted_seconds, 2),
                k=source["k"], slices=source["slices"], **score(labels, case),
                source_method=source["method"], source_dice=source["dice"],
                source_mean_dice=source["mean_dice"])  # fmt: skip


def ablation(
    setting: Setting, rates: Rates, run_dir: Path, skip: Set[tuple] = frozenset()
) -> Iterator[dict[str, Any]]:
    """crii with one part removed, 3 annotated slices, at crii's iterations."""
    k = 3
    iterations = rates.iterations("crii", setting.budget_seconds)
    for name in test_volumes(setting, setting.ablation_cases):
        case = load_case(name)
        slices = spread_slices(case.truth, AXIAL, k)
        _, annotation = painted(case, slices)
        for seed in setting.seeds:
            for variant, overrides in ABLATIONS.items():
                if variant == "crii":
                    continue  # the interactive protocol's crii row at k=3 is the reference
                if planned_key("ablation", name, variant, k=k, seed=seed) in skip:
                    continue
                config = make_config("crii", iterations, seed, overrides)
                volume = TrainingVolume(case.image, annotation, case.spacing, case.name)
                trained = train_round(config, [volume], run_dir / "ablation")
                predicted = predict_case(trained, case, annotation)
                yield _learned_row("ablation", case, variant, predicted, trained, k=k,
                                   seed=seed, slices=slices)  # fmt: skip


NEXT_STRATEGIES: dict[str, tuple[str, float]] = {
    "suggested": ("suggested", 0.0),
    "even": ("even", 0.0),
    "random": ("random", 0.0),
}
"""Annotate-next strategies: name -> (kind for :func:`pick_slices`, suggestion spread). A
strategy added later runs alone on a resume; the first round is made again (the runner warns
if it does not reproduce the stored one)."""


def annotate_next(
    setting: Setting, rates: Rates, run_dir: Path, skip: Set[tuple] = frozenset()
) -> Iterator[dict[str, Any]]:
    """Start from 2 evenly spread slices; each round adds 2 slices chosen by the model's
    suggestions, evenly, or at random, then trains again from the last model (warm start)."""
    iterations = rates.iterations("crii", setting.next_budget_seconds)
    for name in test_volumes(setting, setting.next_cases):
        case = load_case(name)
        for seed in setting.seeds:
            wanted = [
                strategy
                for strategy in NEXT_STRATEGIES
                if not all(
                    planned_key("annotate-next", name, "crii", seed=seed, strategy=strategy,
                                round=index) in skip
                    for index in range(1, setting.next_rounds + 1)
                )
            ]  # fmt: skip
            start_key = planned_key("annotate-next", name, "crii", seed=seed, strategy="all",
                                    round=0)  # fmt: skip
            if not wanted and start_key in skip:
                continue  # rounds build on each other: a chain is redone whole or not at all
            first = spread_slices(case.truth, AXIAL, 2)
            start = next_round(case, first, iterations, seed, None, run_dir / "next-0")
            yield _next_row(case, "all", 0, first, start, seed)
            for strategy in wanted:
                kind, spread = NEXT_STRATEGIES[strategy]
                rng = np.random.default_rng(seed)
                slices, previous = list(first), start
                for round_index in range(1, setting.next_rounds + 1):
                    slices = slices + pick_slices(kind, case, slices, previous, rng, spread)
                    previous = next_round(case, slices, iterations, seed,
                                          previous["trained"].model_path,
                                          run_dir / f"next-{strategy}-{round_index}")  # fmt: skip
                    yield _next_row(case, strategy, round_index, slices, previous, seed)


def next_round(case, slices, iterations, seed, init_model, run_dir):
    _, annotation = painted(case, sorted(slices))
    volume = TrainingVolume(case.image, annotation, case.spacing, case.name)
    trained = train_round(make_config("crii", iterations, seed), [volume], run_dir, init_model)
    predicted = predict_case(trained, case, annotation)
    return {"trained": trained, "predicted": predicted, "annotation": annotation}


def _next_row(case, strategy, round_index, slices, result, seed):
    return _learned_row("annotate-next", case, "crii", result["predicted"], result["trained"],
                        strategy=strategy, round=round_index, slices=sorted(slices),
                        annotated=len(slices), seed=seed)  # fmt: skip


def pick_slices(
    strategy: str, case: Case, slices: list[int], previous: dict, rng, spread: float = 0.0
) -> list[int]:
    """Two more slices. ``even`` and ``random`` stay inside the structure's extent (a person
    sees where it is); ``suggested`` takes the model's ranking (with ``spread``, see
    :func:`suggest_slices`), which keeps to slices within one slice of the predicted structure
    (fewer than two when it runs out)."""
    annotated = np.zeros(case.truth.shape[AXIAL], bool)
    annotated[slices] = True
    if strategy == "suggested":
        picks = suggest_slices(previous["predicted"].slice_scores, annotated, 2, spread=spread)
        return [index for index, _ in picks]
    occupied = np.flatnonzero(np.any(case.truth != 0, axis=(0, 1)))
    candidates = [z for z in range(occupied[0], occupied[-1] + 1) if not annotated[z]]
    if strategy == "random":
        return [int(z) for z in rng.choice(candidates, size=2, replace=False)]
    chosen: list[int] = []
    for _ in range(2):  # farthest from every annotated slice, then from the first pick
        taken = list(slices) + chosen
        distance = [min(abs(z - t) for t in taken) for z in candidates]
        chosen.append(int(candidates[int(np.argmax(distance))]))
        candidates.remove(chosen[-1])
    return chosen


def dataset(
    setting: Setting, rates: Rates, run_dir: Path, skip: Set[tuple] = frozenset()
) -> Iterator[dict[str, Any]]:
    """The paper's protocol: ``dataset_labeled`` of the ``train`` cases fully labeled, the
    rest unlabeled; each method trained once per seed and scored on the ``test`` cases; the
    fully supervised upper bound is trained on every ``train`` case with its labels."""
    if setting.dataset_eval_cases == 0:
        return  # a setting without this protocol (long)
    train_names = split_names("train")
    labeled_names = train_names[: setting.dataset_labeled]
    labeled = [_full_volume(load_case(n)) for n in labeled_names]
    unlabeled = [
        TrainingVolume(load_case(n).image, None, load_case(n).spacing, n)
        for n in train_names[setting.dataset_labeled :]
    ]
    runs = [(m, m, labeled + unlabeled) for m in LEARNED]
    runs.append(("supervised-all-208", "supervised", [_full_volume(load_case(n))
                                                      for n in train_names]))  # fmt: skip
    test_names = split_names("test")[: setting.dataset_eval_cases]
    for seed in setting.seeds:
        for label, method, volumes in runs:
            if all(planned_key("dataset", n, label, seed=seed) in skip for n in test_names):
                continue
            iterations = rates.iterations(method, setting.dataset_budget_seconds)
            trained = train_round(make_config(method, iterations, seed), volumes,
                                  run_dir / "dataset")  # fmt: skip
            for name in test_names:
                case = load_case(name)
                predicted = predict_case(trained, case, None)
                yield _learned_row("dataset", case, label, predicted, trained, seed=seed,
                                   labeled_cases=len([v for v in volumes
                                                      if v.annotation is not None]))  # fmt: skip


def _full_volume(case: Case) -> TrainingVolume:
    return TrainingVolume(case.image, fully_labeled(case), case.spacing, case.name)


PROTOCOLS = {
    "interactive": interactive,
    "ablation": ablation,
    "annotate-next": annotate_next,
    "dataset": dataset,
}
