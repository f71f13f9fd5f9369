"""The real-data benchmark: interactive, dataset, annotate-next and ablation protocols, and
the speed figures, on the hippocampus MRI beside the repository.

    python -m benchmarks.real_data --setting quick       # about 15 min on a 2-core CPU
    python -m benchmarks.real_data --setting full        # hours: see docs/results.md
    python -m benchmarks.report                          # docs/results.md and its plots

Rows go to ``benchmarks/results/<setting>/<protocol>.jsonl`` as they are made; a rerun skips
the rows already there, so an interrupted run goes on where it stopped (``--fresh`` starts
over). Rates of each method are measured first and kept in ``rates.json``.

Several processes can share one GPU: measure the rates alone first (``--rates-only``), then
start one process per ``--shard I/N``; they append whole rows to the same files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import runs
from benchmarks.cases import data_available, split_names
from benchmarks.protocols import (
    LEARNED,
    PROTOCOLS,
    REFINISHED,
    SETTINGS,
    Rates,
    Setting,
    calibrate,
    row_key,
)
from training_backend.atomic import write_text

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """The machine in words, for every figure: CPU model and cores, or the GPU."""
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return f"CPU {model}, {torch.get_num_threads()} threads"


def load_rates(
    folder: Path, setting: Setting, fresh: bool, remeasure: bool = False, stored_only: bool = False
) -> Rates:
    """The stored rates of ``folder``, measured first where there are none or ``fresh``
    (never with ``stored_only``: shards sharing a GPU must not measure side by side).

    ``remeasure`` (once, before resuming) measures again but keeps the rows: the new rates
    are :func:`rebased` so that ``supervised`` keeps its stored rate and setup (its rows stay
    valid), and :func:`supersede_stale_rows` renames the equal-time rows of the other methods
    made at the old rates. The rates a file replaces go to ``rates-history.jsonl``."""
    path = folder / "rates.json"
    if stored_only and not path.is_file():
        raise SystemExit(f"{path} is missing: measure the rates alone first (--rates-only)")
    if not path.is_file() or fresh or remeasure:
        previous = json.loads(path.read_text()) if path.is_file() else None
        if remeasure and not fresh and previous is not None:
            _refuse_paced_rows(folder)
        print("measuring each method's iterations per second ...", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as scratch:
            rates = calibrate(Path(scratch), split_names("train")[0])
        record = {**rates.to_dict(), "device": runs.DEVICE, "machine": machine()}
        if remeasure and not fresh and previous is not None:
            record = rebased(record, previous)
        write_text(path, json.dumps(record, indent=1) + "\n")
        if previous is not None:
            with open(folder / "rates-history.jsonl", "a") as stream:
                stream.write(json.dumps(previous) + "\n")
    data = json.loads(path.read_text())  # always the stored figures, so a resume matches
    if data.get("device", "cpu") != runs.DEVICE:
        raise SystemExit(
            f"{path} holds rates measured on {data.get('device', 'cpu')}, not {runs.DEVICE}: "
            "use another --out folder for another device"
        )
    if data.get("machine", "").startswith("GPU") and data["machine"] != machine():
        raise SystemExit(
            f"{path} holds rates measured on {data['machine']}, not {machine()}: rows made "
            "with them would not be at equal time here; use another --out folder"
        )
    rates = Rates(data["iterations_per_second"], data["setup_seconds"], data["case"],
                  data["slices"])  # fmt: skip
    if remeasure and not fresh:
        supersede_stale_rows(folder / "interactive.jsonl", rates, setting.budget_seconds)
    return rates


def rebased(measured: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """``measured`` rates scaled so that ``supervised`` keeps its ``previous`` rate and setup
    (so its iterations per budget); the raw measurement is kept beside them."""
    raw = measured["iterations_per_second"]
    scale = previous["iterations_per_second"]["supervised"] / raw["supervised"]
    setups = dict(measured["setup_seconds"])
    setups["supervised"] = previous["setup_seconds"]["supervised"]
    return {
        **measured,
        "iterations_per_second": {m: round(r * scale, 3) for m, r in raw.items()},
        "setup_seconds": setups,
        "measured_iterations_per_second": raw,
        "measured_setup_seconds": measured["setup_seconds"],
        "rebased_to": "the supervised rate and setup of the rows kept from the previous "
        "measurement",
    }


def supersede_stale_rows(path: Path, rates: Rates, budget_seconds: float) -> int:
    """Rename equal-time rows of learned methods (and the rows refinished from their runs,
    ``REFINISHED``) whose iterations the new ``rates`` no longer give to
    ``<method>-<iterations>-iterations``: they stay in the results, beside the rows the rerun
    makes. Returns how many were renamed."""
    if not path.is_file():
        return 0
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    source = {derived: method for method, rows_of in REFINISHED.items() for derived in rows_of}
    renamed = 0
    for row in rows:
        method = row["method"]
        paced = source.get(method, method)  # a refinished row has its run's iterations
        if row.get("budget") != "time" or paced not in LEARNED:
            continue
        if row["iterations"] != rates.iterations(paced, budget_seconds):
            row["method"] = f"{method}-{row['iterations']}-iterations"
            renamed += 1
    if renamed:
        write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
        print(f"{path.name}: {renamed} rows made at the old rates renamed", file=sys.stderr)
    return renamed


def _refuse_paced_rows(folder: Path) -> None:
    """Rows of the protocols paced by one method's rate cannot be told apart by name."""
    paced = [name for name in ("ablation", "annotate-next", "dataset")
             if (folder / f"{name}.jsonl").is_file()]  # fmt: skip
    if paced:
        raise SystemExit(
            f"{folder} holds {', '.join(paced)} rows paced by the old rates: move them away "
            "(or use --fresh) before --remeasure-rates"
        )


def append_row(path: Path, row: dict[str, Any]) -> None:
    """One ``write`` in append mode, so rows of processes sharing the file (on a local disk)
    do not interleave; a short write (a full disk) raises instead of leaving half a row."""
    data = (json.dumps(row) + "\n").encode()
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(descriptor, data)
    finally:
        os.close(descriptor)
    if written != len(data):
        raise OSError(f"{path}: only {written} of {len(data)} bytes of a row were written")


def complete_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of ``path`` that end with a newline (another process may be writing one)."""
    if not path.is_file():
        return []
    lines = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in lines if line.strip()]


def run(
    setting: Setting,
    protocols: list[str],
    out: Path,
    fresh: bool,
    remeasure_rates: bool = False,
    rates_only: bool = False,
) -> int:
    setting_name = setting.name
    folder = out / setting_name
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sharded = setting.shard != (0, 1)
    rates = load_rates(folder, setting, fresh, remeasure_rates, stored_only=sharded)
    print(f"rates: {rates.to_dict()}", file=sys.stderr, flush=True)
    if rates_only:
        return 0
    made_per_protocol = []
    for name in protocols:
        path = folder / f"{name}.jsonl"
        if fresh and path.exists():
            path.unlink()
        stored = {row_key(row): row for row in complete_rows(path)}
        done = set(stored)
        differing = 0
        protocol_start = time.perf_counter()
        made = 0
        with tempfile.TemporaryDirectory() as scratch:
            for row in PROTOCOLS[name](setting, rates, Path(scratch), skip=done):
                if row_key(row) in done:
                    differing += _differs_from_stored(row, stored.get(row_key(row)))
                    continue
                row["machine"] = machine()
                append_row(path, row)
                made += 1
                print(_summary(row), file=sys.stderr, flush=True)
        minutes = (time.perf_counter() - protocol_start) / 60
        print(f"{name}: {made} new rows in {minutes:.1f} min", file=sys.stderr, flush=True)
        note = f"; {differing} rerun rows differ from the stored ones" if differing else ""
        made_per_protocol.append(f"{name} {made} new rows in {minutes:.1f} min{note}")
    total = (time.perf_counter() - started) / 60
    log = folder / "runtime.txt"
    with open(log, "a") as stream:
        stream.write(
            f"{setting_name} {','.join(protocols)} ({_scope(setting, protocols)}): {total:.1f} min "
            f"on {machine()} ({'; '.join(made_per_protocol)}; rows already there skipped)\n"
        )
    print(f"done in {total:.1f} min; rows under {folder}", file=sys.stderr)
    return 0


def _differs_from_stored(row: dict[str, Any], stored: dict[str, Any] | None) -> int:
    """1 (and a warning) when a row made again, to refinish its run or to build on it, scores
    otherwise than the stored row of the same key; rows beside it then come from a run that
    is not the stored one. Training is reproducible on one machine at one thread count; with
    another thread count the sums run in another order and a run drifts apart, which the
    warning names."""
    if stored is None or "mean_dice" not in stored or "iterations" not in row:
        return 0  # interpolation rows are made again on every pass: nothing to check
    if abs(row["mean_dice"] - stored["mean_dice"]) <= 1e-4:
        return 0
    now, then = machine(), stored.get("machine")
    cause = f"; stored on {then}, made on {now}" if then and then != now else ""
    print(f"warning: {_summary(row)} made again differs from the stored row "
          f"(dice {stored['mean_dice']:.4f}{cause})", file=sys.stderr, flush=True)  # fmt: skip
    return 1


def _scope(setting: Setting, protocols: list[str] | None = None) -> str:
    """What a run covered, for the runtime log: the share of volumes, seeds, and the slices
    and round length of each protocol run (``protocols``; default the interactive one)."""
    index, total = setting.shard
    share = f"shard {index}/{total} of " if total > 1 else ""
    default = SETTINGS[setting.name].interactive_methods if setting.name in SETTINGS else None
    methods = setting.interactive_methods
    only = f", learned methods {list(methods)} only" if methods != default else ""
    seeds = f"seeds {list(setting.seeds)}"
    parts = {
        "interactive": f"{share}{setting.test_cases} test volumes, {seeds}, "
        f"k {list(setting.slice_counts)}, {setting.budget_seconds:g} s per round{only}",
        "ablation": f"{share}{setting.ablation_cases} test volumes, {seeds}, k 3, "
        f"{setting.budget_seconds:g} s per round",
        "annotate-next": f"{share}{setting.next_cases} test volumes, {seeds}, 2 slices then "
        f"{setting.next_rounds} rounds of 2 more, {setting.next_budget_seconds:g} s per round",
        "dataset": f"{setting.dataset_labeled} labeled train volumes, "
        f"{setting.dataset_eval_cases} test volumes, {seeds}, "
        f"{setting.dataset_budget_seconds:g} s per run",
    }
    chosen = protocols or ["interactive"]
    if len(chosen) == 1:
        return parts[chosen[0]]
    return "; ".join(f"{name}: {parts[name]}" for name in chosen)


def _summary(row: dict[str, Any]) -> str:
    parts = [row["protocol"], row["case"], row["method"]]
    for name in ("k", "budget", "strategy", "round", "seed", "iterations"):
        if name in row:
            parts.append(f"{name}={row[name]}")
    parts.append(f"dice={row['mean_dice']:.3f}")
    return " ".join(str(p) for p in parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="quick")
    parser.add_argument("--protocol", action="append", choices=sorted(PROTOCOLS),
                        help="run only this protocol (repeatable); default: all")  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--fresh", action="store_true", help="discard earlier rows and rates")
    parser.add_argument("--remeasure-rates", action="store_true",
                        help="measure the rates again, once, and keep the rows: the new rates "
                        "are rebased to the stored supervised rate and rows made at the old "
                        "ones renamed (see load_rates)")  # fmt: skip
    parser.add_argument("--max-cases", type=int, help="only the first N volumes (a partial run "
                        "that a later run of the same setting completes)")  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seeds (partial run)")
    parser.add_argument("--methods", nargs="*", choices=LEARNED, metavar="METHOD",
                        help="train only these methods in the interactive protocol (partial "
                        "run); with none, only the interpolation rows are made")  # fmt: skip
    parser.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda"), help="where learned methods run"
    )
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), metavar="I/N",
                        help="take every N-th test volume from the I-th (0-based), so that "
                        "N processes share the work; per-volume protocols only")  # fmt: skip
    parser.add_argument("--rates-only", action="store_true",
                        help="measure (or load) the rates and stop: run it alone before the "
                        "shards, which then read the same rates.json")  # fmt: skip
    args = parser.parse_args(argv)
    if not data_available():
        print("the hippocampus data is not beside the repository (../shared/data/hippocampus)",
              file=sys.stderr)  # fmt: skip
        return 2
    runs.DEVICE = args.device
    setting = SETTINGS[args.setting]
    if args.max_cases:
        setting = dataclasses.replace(
            setting,
            test_cases=min(setting.test_cases, args.max_cases),
            ablation_cases=min(setting.ablation_cases, args.max_cases),
            next_cases=min(setting.next_cases, args.max_cases),
            dataset_eval_cases=min(setting.dataset_eval_cases, args.max_cases),
        )
    if args.seeds:
        setting = dataclasses.replace(setting, seeds=tuple(args.seeds))
    if args.methods is not None:
        setting = dataclasses.replace(setting, interactive_methods=tuple(args.methods))
    protocols = args.protocol or list(PROTOCOLS)
    if args.shard != (0, 1):
        if "dataset" in protocols:
            parser.error("--shard splits the per-volume protocols: name them with --protocol")
        if args.fresh or args.remeasure_rates:
            parser.error(
                "--shard reads the rates measured before (--rates-only): --fresh or "
                "--remeasure-rates would let each shard measure or delete its own"
            )
        setting = dataclasses.replace(setting, shard=args.shard)
    return run(setting, protocols, args.out, args.fresh, args.remeasure_rates, args.rates_only)


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` as ``(I, N)``, with 0 <= I < N."""
    try:
        index, total = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N, e.g. 0/4") from None
    if not 0 <= index < total:
        raise argparse.ArgumentTypeError(f"{text!r}: I must be at least 0 and below N")
    return index, total


if __name__ == "__main__":
    raise SystemExit(main())
