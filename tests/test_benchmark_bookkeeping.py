"""Benchmark bookkeeping that needs no data: rebasing re-measured rates onto kept rows, and
the table of tuning variants."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.protocols import Rates  # noqa: E402
from benchmarks.real_data import rebased, supersede_stale_rows  # noqa: E402
from benchmarks.tune import summary  # noqa: E402


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
    ]
    path = tmp_path / "interactive.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert supersede_stale_rows(path, rates, 10.0) == 1
    after = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["method"] for r in after] == [
        "crii-150-iterations", "supervised", "crii", "interpolation"]  # fmt: skip
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
