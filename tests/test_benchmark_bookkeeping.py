"""Benchmark bookkeeping that needs no data: rebasing re-measured rates onto kept rows, the
table of tuning variants, shards, rows written by several processes, the GPU report tables."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import error_anatomy, next_rules, protocols, real_data, report  # noqa: E402
from benchmarks.protocols import SETTINGS, Rates  # noqa: E402
from benchmarks.real_data import rebased, supersede_stale_rows  # noqa: E402
from benchmarks.tune import finishing_summary, summary  # noqa: E402


def test_rebased_rates_keep_supervised_and_the_measured_ratios() -> None:
    previous = {
        "iterations_per_second": {"crii": 15.0, "supervised": 20.0},
        "setup_seconds": {"crii": 0.1, "supervised": 0.5},
    }
    measured = {
        "iterations_per_second": {"crii": 19.0, "supervised": 25.0},
        "setup_seconds": {"crii": 0.3, "supervised": 0.1},
    }
    out = rebased(measured, previous)
    rates = Rates(out["iterations_per_second"], out["setup_seconds"], "case", 3)
    old = Rates(previous["iterations_per_second"], previous["setup_seconds"], "case", 3)
    assert rates.iterations("supervised", 15.0) == old.iterations("supervised", 15.0)
    assert out["iterations_per_second"]["crii"] == pytest.approx(20.0 * 19.0 / 25.0, abs=1e-3)
    assert out["setup_seconds"]["crii"] == 0.3
    assert out["measured_iterations_per_second"] == {"crii": 19.0, "supervised": 25.0}


def test_rows_made_at_the_old_rates_are_renamed_not_dropped(tmp_path: Path) -> None:
    rates = Rates({"crii": 20.0, "supervised": 20.0, "mean-teacher": 10.0},
                  {"crii": 0.0, "supervised": 0.0, "mean-teacher": 0.0}, "case", 3)  # fmt: skip
    rows = [
        {"method": "crii", "budget": "time", "iterations": 150},  # stale: now 200
        {"method": "supervised", "budget": "time", "iterations": 200},  # still right
        {"method": "crii", "budget": "iterations", "iterations": 200},  # paced by supervised
        {"method": "interpolation", "budget": "none"},
        {"method": "crii+prior-class-split", "budget": "time", "iterations": 150},  # its run's
        {"method": "supervised+late-prior-blend", "budget": "time", "iterations": 200},
    ]
    path = tmp_path / "interactive.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert supersede_stale_rows(path, rates, 10.0) == 2
    after = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["method"] for r in after] == [
        "crii-150-iterations", "supervised", "crii", "interpolation",
        "crii+prior-class-split-150-iterations", "supervised+late-prior-blend"]  # fmt: skip
    assert supersede_stale_rows(path, rates, 10.0) == 0  # a second pass changes nothing


def test_tuning_summary_groups_rows_by_variant_in_run_order(tmp_path: Path) -> None:
    def row(variant, dice, network, settings=None, note=None):
        data = {"variant": variant, "method": "crii", "settings": settings or {}, "k": 2,
                "iterations": 270, "mean_dice": dice, "dice": [dice, dice],
                "network_dice": network}  # fmt: skip
        return {**data, "note": note} if note else data

    rows = [row("b", 0.6, 0.5), row("a", 0.8, 0.7, {"loss.ema_decay": 0.9}, "tried"),
            row("b", 0.4, 0.3)]  # fmt: skip
    path = tmp_path / "tuning.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = summary(path).splitlines()
    assert len(lines) == 4  # header, rule, one line per variant
    assert lines[2].startswith("| b | crii | defaults | 2 | 2 | 270 | 0.500 |")
    assert "loss.ema_decay=0.9 (tried)" in lines[3] and "| 0.700 |" in lines[3]


def test_shards_split_the_test_volumes_without_overlap(monkeypatch):
    names = [f"hippocampus_{i:03d}" for i in range(7)]
    monkeypatch.setattr(protocols, "split_names", lambda split: names)
    quick = SETTINGS["quick"]
    shares = [
        protocols.test_volumes(dataclasses.replace(quick, shard=(index, 3)), 5)
        for index in range(3)
    ]
    assert shares == [names[0:5:3], names[1:5:3], names[2:5:3]]
    assert sorted(name for share in shares for name in share) == names[:5]


def test_shard_text_is_checked():
    assert real_data.parse_shard("1/4") == (1, 4)
    for wrong in ("4/4", "-1/2", "1", "a/b"):
        with pytest.raises(real_data.argparse.ArgumentTypeError):
            real_data.parse_shard(wrong)


def _append_many(path: str, tag: str) -> None:
    for index in range(200):
        real_data.append_row(Path(path), {"case": f"{tag}{index}", "dice": [0.5] * 300})


def test_rows_appended_by_several_processes_stay_whole(tmp_path):
    path = tmp_path / "rows.jsonl"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_many, args=(str(path), tag)) for tag in "abc"]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    rows = real_data.complete_rows(path)
    assert len(rows) == 600
    assert {row["case"][0] for row in rows} == {"a", "b", "c"}


def test_a_row_being_written_is_not_read(tmp_path):
    path = tmp_path / "rows.jsonl"
    real_data.append_row(path, {"case": "done"})
    with open(path, "a") as stream:
        stream.write('{"case": "half')
    assert real_data.complete_rows(path) == [{"case": "done"}]


def test_gpu_tables_show_the_gpu_memory_and_the_speed_up():
    speed = [{"method": "crii", "precision": "bfloat16", "iterations_per_second": 18.3,
              "first_preview_seconds": 7.8, "round_seconds": 16.1, "inference_seconds": 0.06,
              "peak_rss_mib": 1800.0, "peak_cuda_mib": 60.6, "budget_seconds": 10.0,
              "volume_shape": [36, 52, 38], "machine": "GPU test"}]  # fmt: skip
    assert "| crii | bfloat16 | 18.3 | 7.8 | 16.1 | 0.06 | 1800.0 | 60.6 |" in "\n".join(
        report.speed_table(speed)
    )
    phantom = {"gpu": "test GPU", "cpu": "x86_64, 16 threads", "torch": "2.x",
               "volume_shape": [96, 96, 64], "annotated_slices": [19, 32, 45],
               "rows": [{"device": "cuda", "mixed_precision": True, "batch": 8,
                         "iterations": 300, "iterations_per_second": 25.5,
                         "speedup_vs_cpu": 2.7, "inference_seconds_whole_volume": 0.1,
                         "peak_gpu_memory_mib": 121.0, "dice_after_training": 0.88}]}  # fmt: skip
    text = "\n".join(report.phantom_speed_table(phantom))
    assert (
        "test GPU" in text and "| cuda | yes | 8 | 300 | 25.5 | 2.7 | 0.1 | 121.0 | 0.88 |" in text
    )


def test_difference_table_pairs_volumes_and_says_when_it_cannot():
    def row(method, case, dice):
        return {"method": method, "case": case, "mean_dice": dice, "seed": 0}

    rows = [row("crii", f"c{i}", 0.7 + 0.01 * i) for i in range(12)]
    rows += [row("supervised", f"c{i}", 0.6 + 0.01 * i) for i in range(12)]
    rows += [row("crii-unaligned-prior", f"c{i}", 0.5) for i in range(12)]
    table = report.difference_table(rows, "crii", ["supervised", "mean-teacher"])
    assert len(table) == 3 and table[2].startswith("| supervised | +0.100")
    assert table[2].endswith("| yes |")  # 12 of 12 volumes better by 0.1
    alone = report.difference_table(rows, "crii", ["mean-teacher"])
    assert len(alone) == 1 and "No paired difference" in alone[0]


def test_seed_tables_compare_per_seed_on_the_volumes_with_every_seed():
    def row(method, case, seed, dice):
        return {"method": method, "case": case, "mean_dice": dice, "seed": seed,
                "budget": "none" if method.startswith("interpolation") else "time"}  # fmt: skip

    rows = []
    for i in range(12):
        for seed in (0, 1, 2):
            rows.append(row("crii", f"c{i}", seed, 0.70 + 0.01 * i + 0.01 * seed))
            rows.append(row("supervised", f"c{i}", seed, 0.60 + 0.01 * i))
        rows.append(row("interpolation", f"c{i}", 0, 0.72 + 0.01 * i))
    rows += [row("crii", f"extra{i}", 0, 0.9) for i in range(5)]  # seed 0 only: left out
    rows += [row("supervised", f"extra{i}", 0, 0.1) for i in range(5)]
    table = report.seed_tables(rows, "crii", ["supervised", "mean-teacher", "interpolation"])
    text = "\n".join(table)
    assert "Seeds [0, 1, 2] on the 12 volumes" in text
    crii_line = next(line for line in table if line.startswith("| crii |"))
    assert crii_line.startswith("| crii | 0.755 | 0.765 | 0.775 | 0.765 ± 0.010 |")
    supervised = next(line for line in table if line.startswith("| supervised | +"))
    assert supervised.startswith("| supervised | +0.100") and supervised.endswith("| yes; yes |")
    assert supervised.count("+0.110 [+0.110, +0.110]") == 2  # seed 1 and the seed average
    interpolation = [line for line in table if line.startswith("| interpolation | ")][-1]
    assert "-0.020" in interpolation and "-0.010 [-0.010, -0.010]" in interpolation
    assert interpolation.endswith("| no; yes |")  # seed 2 ties it; the average is below 0
    assert "mean-teacher" not in text  # no rows
    assert report.seed_coverage(rows, "crii") == (
        "12 volumes with seeds [0, 1, 2], 5 volumes with seeds [0]"
    )
    assert report.seed_tables([r for r in rows if r["seed"] == 0], "crii", ["supervised"]) == []
    lone = [r for r in rows if r["method"] != "crii" or r["case"] in ("c0", "extra0")]
    assert report.seed_tables(lone, "crii", ["supervised", "interpolation"]) == []  # 1 volume


def test_error_anatomy_tells_class_confusion_from_spill():
    truth = np.zeros((12, 12, 30), np.uint8)
    truth[3:9, 3:9, 2:14] = 1
    truth[3:9, 3:9, 14:28] = 2
    confused = truth.copy()
    confused[3:9, 3:9, 14:24] = 1  # class 1 reaches 10 mm into class 2
    spilled = truth.copy()
    spilled[0:2, 0:2, 20:22] = 1  # a blob of class 1 far outside the structure
    spacing = (1.0, 1.0, 1.0)
    inside = error_anatomy.far_errors(confused, truth, 1, spacing, margin_mm=5.0)
    assert inside.false_positive == 6 * 6 * 10
    assert inside.far == inside.far_in_other_class == 6 * 6 * 5  # slices 19..23 are > 5 mm
    assert inside.far_in_background == 0
    outside = error_anatomy.far_errors(spilled, truth, 1, spacing, margin_mm=5.0)
    assert outside.far == outside.far_in_background == 8 and outside.far_in_other_class == 0
    result = error_anatomy.anatomy(confused, truth, spacing, margin_mm=5.0)
    assert result["hd95_foreground"] == 0.0  # the foreground is exact: only the classes swap
    assert result["hd95"][0] > 5.0
    table = error_anatomy.table([{"case": "a", "method": "crii", **result}], 5.0)
    assert "| crii | 1 | 360 | 180 | 180 | 0 |" in table


def test_next_rules_summary_pairs_each_rule_with_even_per_case():
    rows = [
        {"case": case, "rule": rule, "round": index, "mean_dice": dice, "seed": 0, "iterations": 9}
        for case, rule, index, dice in [
            ("a", "start", 0, 0.5), ("b", "start", 0, 0.4),
            ("a", "even", 1, 0.70), ("b", "even", 1, 0.60),
            ("a", "suggested-spread-1", 1, 0.75), ("b", "suggested-spread-1", 1, 0.55),
        ]
    ]  # fmt: skip
    table = next_rules.summary(rows).splitlines()
    assert table[0].startswith("2 train cases, seed 0, 9 iterations per round")
    assert "| even | 0.650 |" in table
    spread = next(line for line in table if line.startswith("| suggested-spread-1"))
    assert "0.650 (+0.000" in spread and "1/1)" in spread  # one case ahead, one behind
    assert next_rules.rule_name("suggested", 0.5) == "suggested-spread-0.5"


def test_annotate_next_report_lists_variants_and_the_slices_saved(tmp_path):
    rows = []
    for case, base in (("a", 0.5), ("b", 0.4), ("c", 0.45)):
        rows.append({"case": case, "method": "crii", "strategy": "all", "round": 0,
                     "annotated": 2, "mean_dice": base, "seed": 0})  # fmt: skip
        gains = {"suggested": 0.10, "even": 0.06, "random": 0.05, "suggested-spread-1": 0.13}
        for strategy, gain in gains.items():
            for index in (1, 2, 3):
                rows.append({"case": case, "method": "crii", "strategy": strategy,
                             "round": index, "annotated": 2 + 2 * index,
                             "mean_dice": base + gain * index, "seed": 0})  # fmt: skip
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "annotate-next.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = report.build("x", folder, tmp_path / "docs")
    order = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    assert order[1:] == ["suggested", "even", "random", "suggested-spread-1"]
    assert "- round 1, suggested minus even: +0.040" in text
    # suggested after round 2 (0.2 up) against even after round 3 (0.18 up): 2 slices saved
    assert "- round 2, suggested minus even at round 3 (one round more): +0.020" in text
    assert "- round 3, suggested-spread-1 minus random: +0.240" in text


def test_runtime_log_describes_the_protocol_that_ran():
    setting = dataclasses.replace(SETTINGS["full"], seeds=(0,), shard=(1, 2))
    scope = real_data._scope(setting, ["annotate-next"])
    assert scope.startswith("shard 1/2 of 20 test volumes")
    assert "3 rounds of 2 more, 10 s per round" in scope and "k [" not in scope
    both = real_data._scope(setting, ["interactive", "ablation"])
    assert both.startswith("interactive: shard 1/2 of 52") and "; ablation: " in both


def test_finishing_summary_compares_each_finishing_with_the_product_one(tmp_path):
    rows = [
        {"variant": "v", "method": "crii", "k": 2, "iterations": 9, "interpolation_dice": 0.5,
         "finishing_variants": {"blend-0.5": base, "split": base + gain},
         "finishing_hd95": {"blend-0.5": 6.0, "split": hd95}}
        for base, gain, hd95 in [(0.6, 0.1, 4.0), (0.7, -0.02, None)]
    ]  # fmt: skip
    rows.append({"variant": "old", "finishing_variants": {}})  # no HD95 recorded: skipped
    path = tmp_path / "tuning.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = finishing_summary(path, ["v", "old"])
    assert "v: crii, k = 2, 2 cases, 9 iterations" in text
    assert "| split | 0.690 | – | +0.040 | 1/1 |" in text  # one HD95 undefined: no mean
    assert "| blend-0.5 | 0.650 | 6.00 | +0.000 | 0/0 |" in text
    assert "old: no rows with finishing HD95" in text


def test_a_row_made_again_is_checked_against_the_stored_one(capsys):
    stored = {"protocol": "interactive", "case": "a", "method": "crii", "mean_dice": 0.70,
              "iterations": 9}  # fmt: skip
    assert real_data._differs_from_stored({**stored, "mean_dice": 0.70004}, stored) == 0
    assert real_data._differs_from_stored({**stored, "mean_dice": 0.69}, stored) == 1
    assert "differs from the stored row (dice 0.7000)" in capsys.readouterr().err
    elsewhere = {**stored, "machine": "CPU of another kind, 64 threads"}
    assert real_data._differs_from_stored({**stored, "mean_dice": 0.69}, elsewhere) == 1
    assert "stored on CPU of another kind, 64 threads, made on CPU" in capsys.readouterr().err
    interpolated = {"protocol": "interactive", "case": "a", "method": "interpolation",
                    "mean_dice": 0.5}  # fmt: skip
    assert real_data._differs_from_stored(interpolated, {**interpolated, "mean_dice": 0.4}) == 0


def test_a_refinished_row_is_paired_with_its_own_run_not_the_stored_one(tmp_path):
    def row(method, case, dice, **extra):
        return {"protocol": "interactive", "method": method, "case": case, "k": 2,
                "seed": 0, "budget": "time", "mean_dice": dice, "dice": [dice, dice],
                "mean_hd95": 3.0, "round_seconds": 1.0, "slices": [1, 5],
                **extra}  # fmt: skip

    rows = [row("crii", f"c{i}", 0.5) for i in range(12)]  # a stored run, not the source
    rows += [row("crii+prior-class-split", f"c{i}", 0.72, source_method="crii",
                 source_dice=[0.7, 0.7], source_mean_dice=0.7) for i in range(12)]  # fmt: skip
    unfinished = report.same_run_rows(rows)
    assert {r["method"] for r in unfinished} == {"crii (same run)"}
    assert [r["mean_dice"] for r in unfinished] == [0.7] * 12
    folder = tmp_path / "x"
    folder.mkdir()
    (folder / "interactive.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = report.build("x", folder, tmp_path / "docs")
    assert "| crii (same run) | +0.020" in text  # the finishing alone
    assert "| crii | +0.220" in text  # against the stored run


def test_the_limited_class_splits_tried_on_the_phantom():
    from benchmarks.class_split_lesion import sure_of_class, within_reach

    regions = np.zeros((2, 1, 1, 6), bool)
    regions[0, ..., :2] = True  # class 1 at voxels 0-1; class 2 nowhere
    near = within_reach(regions, 2.0, (1.0, 1.0, 1.0))
    assert list(near[0, 0, 0]) == [True] * 4 + [False] * 2 and not near[1].any()
    probabilities = np.array([[0.1, 0.1], [0.85, 0.5], [0.05, 0.4]], np.float32)
    assert list(sure_of_class(probabilities, 0.9)) == [True, False]  # 0.94 and 0.56 of it


def test_the_phantom_lesion_finishings_follow_the_products_contrast_rule():
    from benchmarks.cases import painted
    from benchmarks.class_split_lesion import finished, phantom_case
    from training_backend.simulate import spread_slices

    case = phantom_case(0)
    _, annotation = painted(case, spread_slices(case.truth, 2, 3))
    rng = np.random.default_rng(0)
    probabilities = rng.random((3, *case.truth.shape)).astype(np.float32)
    probabilities /= probabilities.sum(0)
    labels = finished(probabilities, annotation, case)
    assert {"blend-0.5", "class-split-1", "class-split-1-alike-1.5"} <= set(labels)
    assert all(v.shape == case.truth.shape for v in labels.values())
    # organ and lesion look different: the product's rule leaves the network's border
    assert np.array_equal(labels["class-split-1-alike-1.5"], labels["blend-0.5"])
    assert not np.array_equal(labels["class-split-1"], labels["blend-0.5"])
