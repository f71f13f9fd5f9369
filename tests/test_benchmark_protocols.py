"""The real-data benchmark's machinery on one hippocampus case with a few iterations: rows,
resume, the annotate-next strategies and the report. Skips without ../shared."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import prior_alignment, profile_step, protocols, real_data, report, runs  # noqa: E402
from benchmarks.cases import AXIAL, data_available, load_case, painted  # noqa: E402
from benchmarks.protocols import SETTINGS, Rates  # noqa: E402

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(
        not data_available(), reason="needs ../shared/data/hippocampus (real MRI) beside the repo"
    ),
]

TINY = dataclasses.replace(
    SETTINGS["quick"],
    name="tiny",
    test_cases=1,
    slice_counts=(2,),
    budget_seconds=3.0,
    ablation_cases=1,
    next_cases=1,
    next_rounds=1,
    next_budget_seconds=2.0,
    dataset_labeled=1,
    dataset_eval_cases=1,
    dataset_budget_seconds=2.0,
    equal_iteration_counts=(2,),
)
RATES = Rates(
    {"crii": 1.0, "supervised": 2.0, "mean-teacher": 1.0},
    {"crii": 0.0, "supervised": 1.0, "mean-teacher": 0.0},
    "hippocampus_004",
    3,
)


def test_rates_turn_seconds_into_iterations_after_setup():
    assert RATES.iterations("crii", 3.0) == 3
    assert RATES.iterations("supervised", 3.0) == 4  # (3 s - 1 s setup) x 2 it/s
    assert RATES.iterations("supervised", 0.5) == 1  # never less than one


def test_interactive_rows_cover_every_method_and_budget(tmp_path):
    rows = list(protocols.interactive(TINY, RATES, tmp_path))
    seen = {(r["method"], r["budget"]) for r in rows}
    assert seen == {
        ("interpolation", "none"),
        ("interpolation-extrapolated", "none"),
        ("interpolation-unaligned", "none"),
        ("interpolation-extrapolated-unaligned", "none"),
        ("crii", "time"),
        ("crii+prior-class-split", "time"),
        ("supervised", "time"),
        ("supervised+late-prior-blend", "time"),
        ("supervised+late-prior-blend+class-split", "time"),
        ("mean-teacher", "time"),
        ("crii", "iterations"),
        ("mean-teacher", "iterations"),
    }
    by = {(r["method"], r["budget"]): r for r in rows}
    assert by[("crii", "time")]["iterations"] == 3
    assert by[("supervised", "time")]["iterations"] == 4
    assert by[("crii", "iterations")]["iterations"] == 4  # paced by supervised
    assert by[("crii+prior-class-split", "time")]["iterations"] == 3  # the crii run, refinished
    refinished = by[("crii+prior-class-split", "time")]
    assert refinished["source_method"] == "crii"  # and it keeps that run's own Dice
    assert refinished["source_mean_dice"] == by[("crii", "time")]["mean_dice"]
    assert refinished["source_dice"] == by[("crii", "time")]["dice"]
    for row in rows:
        assert row["k"] == 2 and len(row["slices"]) == 2
        assert len(row["dice"]) == 2 and 0.0 <= row["mean_dice"] <= 1.0
        assert row["mean_dice"] == pytest.approx(np.mean(row["dice"]), abs=1e-3)
    # interpolation reproduces the annotated slices exactly: never worse than nothing
    assert by[("interpolation", "none")]["mean_dice"] > 0.1


def test_interactive_skips_rows_already_written(tmp_path):
    first = list(protocols.interactive(TINY, RATES, tmp_path))
    done = {real_data.row_key(r) for r in first}
    again = list(protocols.interactive(TINY, RATES, tmp_path, skip=done))
    # only the cheap interpolation rows are recomputed; nothing is trained again
    assert {r["method"] for r in again} <= set(runs.INTERPOLATION_METHODS)


def test_ablation_names_each_variant_once(tmp_path):
    rows = list(protocols.ablation(TINY, RATES, tmp_path))
    assert sorted(r["method"] for r in rows) == sorted(set(protocols.ABLATIONS) - {"crii"})
    assert all(r["k"] == 3 and r["iterations"] == 3 for r in rows)


def test_annotate_next_adds_two_new_slices_per_round(tmp_path):
    rows = list(protocols.annotate_next(TINY, RATES, tmp_path))
    start = [r for r in rows if r["round"] == 0]
    assert len(start) == 1 and start[0]["annotated"] == 2
    later = {r["strategy"]: r for r in rows if r["round"] == 1}
    assert set(later) == {"suggested", "even", "random"}
    for row in later.values():
        assert row["annotated"] == 4
        assert set(start[0]["slices"]) < set(row["slices"])


def test_annotate_next_runs_only_a_strategy_added_later(tmp_path, monkeypatch):
    name = protocols.test_volumes(TINY, 1)[0]
    done = {
        protocols.planned_key("annotate-next", name, "crii", seed=0, strategy=strategy, round=1)
        for strategy in ("suggested", "even", "random")
    }
    start = protocols.planned_key("annotate-next", name, "crii", seed=0, strategy="all", round=0)
    done.add(start)
    assert list(protocols.annotate_next(TINY, RATES, tmp_path, skip=done)) == []
    strategies = {**protocols.NEXT_STRATEGIES, "suggested-spread-1": ("suggested", 1.0)}
    monkeypatch.setattr(protocols, "NEXT_STRATEGIES", strategies)
    rows = list(protocols.annotate_next(TINY, RATES, tmp_path, skip=done))
    assert [(r["strategy"], r["round"]) for r in rows] == [("all", 0), ("suggested-spread-1", 1)]
    monkeypatch.setattr(protocols, "NEXT_STRATEGIES", {"even": ("even", 0.0)})
    rows = list(protocols.annotate_next(TINY, RATES, tmp_path, skip=done - {start}))
    assert (rows[0]["strategy"], rows[0]["round"]) == ("all", 0)  # made again


def test_even_picks_fill_the_largest_gaps():
    case = load_case("hippocampus_004")
    occupied = np.flatnonzero(np.any(case.truth != 0, axis=(0, 1)))
    low, high = int(occupied[0]), int(occupied[-1])
    picks = protocols.pick_slices("even", case, [low, high], {}, np.random.default_rng(0))
    middle = (low + high) / 2
    assert abs(picks[0] - middle) <= 1  # the first fills the only gap in its middle
    assert all(low < p < high for p in picks) and len(set(picks)) == 2


def test_dataset_protocol_trains_on_labeled_and_unlabeled_volumes(tmp_path, monkeypatch):
    names = ["hippocampus_004", "hippocampus_006", "hippocampus_007"]
    monkeypatch.setattr(protocols, "split_names", lambda split: names)
    rows = list(protocols.dataset(TINY, RATES, tmp_path))
    methods = {r["method"]: r for r in rows}
    assert set(methods) == {"crii", "supervised", "mean-teacher", "supervised-all-208"}
    assert methods["crii"]["labeled_cases"] == 1
    assert methods["supervised-all-208"]["labeled_cases"] == 3


def test_runner_writes_rows_and_report_reads_them(tmp_path, monkeypatch):
    monkeypatch.setitem(SETTINGS, "tiny", TINY)
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "rates.json").write_text(json.dumps({**RATES.to_dict(), "machine": "test"}))
    assert real_data.main(["--setting", "tiny", "--protocol", "interactive",
                           "--out", str(tmp_path)]) == 0  # fmt: skip
    lines = (folder / "interactive.jsonl").read_text().splitlines()
    assert len(lines) == 12  # 4 interpolation rows, 8 learned (3 of them refinished)
    assert real_data.main(["--setting", "tiny", "--protocol", "interactive",
                           "--out", str(tmp_path)]) == 0  # fmt: skip
    assert (folder / "interactive.jsonl").read_text().splitlines() == lines  # resumed: no dups
    docs = tmp_path / "docs"
    text = report.build("tiny", folder, docs)
    assert "**k = 2**" in text
    assert "| crii | 1 |" in text and "| interpolation-extrapolated | 1 |" in text
    assert (docs / "images" / "results-tiny-dice-vs-slices.png").stat().st_size > 1000


def test_shard_option_is_checked_and_refuses_what_would_clash(capsys):
    assert real_data.parse_shard("1/4") == (1, 4)
    for wrong in ("4/4", "-1/2", "1", "a/b"):
        with pytest.raises(real_data.argparse.ArgumentTypeError):
            real_data.parse_shard(wrong)
    for clash in (
        ["--protocol", "dataset"],
        ["--protocol", "interactive", "--fresh"],
        ["--protocol", "interactive", "--remeasure-rates"],
    ):
        with pytest.raises(SystemExit):
            real_data.main(["--setting", "quick", "--shard", "0/2", *clash])
        assert "--shard" in capsys.readouterr().err


def test_a_shard_never_measures_rates_itself(tmp_path, monkeypatch):
    monkeypatch.setitem(SETTINGS, "tiny", TINY)
    with pytest.raises(SystemExit, match="--rates-only"):
        real_data.main(["--setting", "tiny", "--protocol", "interactive", "--shard", "0/2",
                        "--out", str(tmp_path)])  # fmt: skip
    assert not (tmp_path / "tiny" / "interactive.jsonl").exists()


def test_rates_only_measures_nothing_else(tmp_path, monkeypatch):
    monkeypatch.setitem(SETTINGS, "tiny", TINY)
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "rates.json").write_text(json.dumps({**RATES.to_dict(), "machine": "test"}))
    assert real_data.main(["--setting", "tiny", "--rates-only", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == ["rates.json"]


def test_painted_marks_background_slices_as_annotated():
    case = load_case("hippocampus_004")
    empty = int(np.flatnonzero(~np.any(case.truth != 0, axis=(0, 1)))[0])
    _, annotation = painted(case, [empty, 15])
    assert annotation.annotated[empty] and annotation.annotated[15]
    assert annotation.axis == AXIAL


def test_step_profile_times_every_phase_of_a_step():
    row = profile_step.profile("mean-teacher", torch.device("cpu"), 2, 1, 1)
    assert set(row["median_ms"]) == set(profile_step.PHASES)
    assert all(value >= 0 for value in row["median_ms"].values())
    assert row["median_ms"]["losses"] > 0 and row["median_ms"]["after_step"] > 0
    assert row["iterations_per_second_free"] > 0
    assert "aten::" in row["profiler_table"]
    assert row["kernel_launches_per_iteration"] == 0  # no GPU here


def test_prior_alignment_table_covers_every_combination():
    results = prior_alignment.scores(["hippocampus_004"])
    assert set(results) == {(k, e, a) for k in (2, 3, 5) for e in (False, True)
                            for a in (False, True)}  # fmt: skip
    assert all(dice.shape == (1, 2) and ((dice >= 0) & (dice <= 1)).all()
               for dice in results.values())  # fmt: skip
    text = prior_alignment.table(results)
    assert text.count("\n") == 13 and "| 2 | yes | yes | 1 |" in text


def test_methods_option_limits_what_is_trained(tmp_path, monkeypatch):
    monkeypatch.setitem(SETTINGS, "tiny", TINY)
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "rates.json").write_text(json.dumps({**RATES.to_dict(), "machine": "test"}))
    arguments = ["--setting", "tiny", "--protocol", "interactive", "--out", str(tmp_path)]
    assert real_data.main([*arguments, "--methods"]) == 0
    rows = real_data.complete_rows(folder / "interactive.jsonl")
    assert {r["method"] for r in rows} == set(runs.INTERPOLATION_METHODS)
    assert real_data.main([*arguments, "--methods", "supervised"]) == 0
    rows = real_data.complete_rows(folder / "interactive.jsonl")
    assert {r["method"] for r in rows} - set(runs.INTERPOLATION_METHODS) == {
        "supervised", "supervised+late-prior-blend", "supervised+late-prior-blend+class-split"
    }  # fmt: skip
    runtime = (folder / "runtime.txt").read_text()
    assert "learned methods [] only" in runtime and "learned methods ['supervised'] only" in runtime
