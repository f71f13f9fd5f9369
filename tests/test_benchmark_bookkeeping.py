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

from benchmarks.real_data import rebased  # noqa: E402
from benchmarks.tune import summary  # noqa: E402


def test_rebased_rates_keep_supervised_and_the_measured_ratios() -> None:
    previous = {"iterations_per_second": {"crii": 15.0, "supervised": 20.0}}
    measured = {
        "iterations_per_second": {"crii": 19.0, "supervised": 25.0},
        "setup_seconds": {"crii": 0.3, "supervised": 0.1},
    }
    out = rebased(measured, previous)
    rates = out["iterations_per_second"]
    assert rates["supervised"] == 20.0
    assert rates["crii"] == pytest.approx(20.0 * 19.0 / 25.0, abs=1e-3)
    assert out["measured_iterations_per_second"] == {"crii": 19.0, "supervised": 25.0}
    assert out["setup_seconds"] == measured["setup_seconds"]


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
