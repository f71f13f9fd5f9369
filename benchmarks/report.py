"""Summaries of the benchmark rows: the tables and plots of docs/results.md.

    python -m benchmarks.report [--setting quick] [--print]

Reads ``benchmarks/results/<setting>/*.jsonl`` (and ``rates.json``, ``runtime.txt``), writes
``docs/results-<setting>.md`` and its plots under ``docs/images/``. Per volume, a method's
figure is the mean over its seeds; tables give the mean and standard deviation over volumes,
and the paired difference of crii against each baseline with a 95% bootstrap interval, the
Wilcoxon p-value and wins/losses.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.real_data import RESULTS, complete_rows
from benchmarks.stats import excludes_zero, format_difference, mean_sd, paired_difference

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BASELINES = (
    "supervised",
    "mean-teacher",
    "interpolation",
    "interpolation-extrapolated",
    "interpolation-extrapolated-unaligned",
    "supervised+late-prior-blend",
)

CRII_VARIANTS = ("crii+prior-class-split",)
"""``crii`` finished another way from the same runs (benchmarks.protocols.REFINISHED)."""
VARIANT_BASELINES = ("supervised+late-prior-blend+class-split",)

Row = dict[str, Any]
MIN_VOLUMES_FOR_VERDICT = 10
"""Below this many paired volumes a percentile bootstrap interval is too narrow to trust: the
table gives the interval but no verdict."""


def read_rows(folder: Path, protocol: str) -> list[Row]:
    return complete_rows(folder / f"{protocol}.jsonl")


def per_volume(rows: Iterable[Row], value: Callable[[Row], float | None]) -> dict[str, float]:
    """Case -> mean over seeds of ``value`` (cases where any value is missing are dropped)."""
    grouped: dict[str, list[float | None]] = defaultdict(list)
    for row in rows:
        grouped[row["case"]].append(value(row))
    return {c: float(np.mean(v)) for c, v in grouped.items() if all(x is not None for x in v)}


def _select(rows: Iterable[Row], **match: Any) -> list[Row]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def _fmt(mean: float, sd: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def method_table(rows: list[Row], methods: list[str], **match: Any) -> list[str]:
    """Markdown rows: method, volumes, Dice per class, mean Dice, HD95, iterations, s/round."""
    lines = [
        "| method | volumes | Dice class 1 | Dice class 2 | mean Dice | HD95 mm | iterations "
        "| train s | s / round |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        chosen = _select(rows, method=method, **match)
        if not chosen:
            continue
        dice = per_volume(chosen, lambda r: r["mean_dice"])
        classes = [per_volume(chosen, lambda r, k=k: r["dice"][k]) for k in (0, 1)]
        hd95 = per_volume(chosen, lambda r: r["mean_hd95"])
        iterations = [r.get("iterations") for r in chosen if r.get("iterations")]
        seconds = [r["round_seconds"] for r in chosen if r.get("round_seconds") is not None]
        trained = [r["train_seconds"] for r in chosen if r.get("train_seconds") is not None]
        lines.append(
            f"| {method} | {len(dice)} | "
            + " | ".join(_fmt(*mean_sd(list(c.values()))) for c in classes)
            + f" | **{_fmt(*mean_sd(list(dice.values())))}** | "
            + (_fmt(*mean_sd(list(hd95.values())), 2) if hd95 else "–")
            + (f" ({len(dice) - len(hd95)} undefined)" if len(hd95) < len(dice) else "")
            + f" | {int(np.median(iterations)) if iterations else '–'} | "
            + (f"{np.median(trained):.1f}" if trained else "–")
            + " | "
            + (f"{np.median(seconds):.1f}" if seconds else "–")
            + " |"
        )
    return lines


def difference_table(rows: list[Row], reference: str, others: list[str], **match: Any):
    """Markdown rows: ``reference`` minus each of ``others``, paired per volume; one sentence
    instead of a table where no baseline has two volumes in common with ``reference``."""
    lines = [
        f"| {reference} minus | mean Dice difference [95% CI], Wilcoxon p, wins/losses "
        "| CI excludes 0 |",
        "|---|---|---|",
    ]
    ours = per_volume(_select(rows, method=reference, **match), lambda r: r["mean_dice"])
    for other in others:
        theirs = per_volume(_select(rows, method=other, **match), lambda r: r["mean_dice"])
        cases = sorted(set(ours) & set(theirs))
        if len(cases) < 2:
            continue
        d = paired_difference([ours[c] for c in cases], [theirs[c] for c in cases])
        verdict = "yes" if excludes_zero(d) else "no"
        if len(cases) < MIN_VOLUMES_FOR_VERDICT:
            verdict = f"n < {MIN_VOLUMES_FOR_VERDICT}: no verdict"
        lines.append(f"| {other} | {format_difference(d)} | {verdict} |")
    if len(lines) == 2:
        return [
            f"No paired difference: fewer than 2 volumes have `{reference}` rows and a "
            "baseline's here (rows made with an earlier version keep another name)."
        ]
    return lines


def same_run_rows(rows: Iterable[Row]) -> list[Row]:
    """For rows finished another way from a run (they carry ``source_mean_dice``), the Dice of
    that same run unfinished, as rows of method ``"<source> (same run)"``: the pair that shows
    what the finishing alone changes, whichever run of the source method is stored."""
    unfinished_unknown = ("hd95", "mean_hd95", "predict_seconds", "round_seconds")
    return [
        {**{k: v for k, v in row.items() if k not in unfinished_unknown},
         "method": f"{row['source_method']} (same run)", "dice": row["source_dice"],
         "mean_dice": row["source_mean_dice"]}
        for row in rows
        if "source_mean_dice" in row
    ]  # fmt: skip


def _per_seed(rows: list[Row], method: str, seeds: list[int]) -> dict[int, dict[str, float]]:
    """Seed -> case -> mean Dice of ``method``; interpolation, which has no seed, counts for
    every seed."""
    chosen = _select(rows, method=method)
    if _budget(method) == "none":
        values = per_volume(chosen, lambda r: r["mean_dice"])
        return {seed: values for seed in seeds}
    return {
        seed: per_volume(_select(chosen, seed=seed), lambda r: r["mean_dice"]) for seed in seeds
    }


def seed_coverage(rows: list[Row], method: str) -> str:
    """How many volumes ``method`` has with how many seeds, e.g. ``17 volumes with seeds
    [0, 1, 2], 35 volumes with seeds [0]``."""
    seeds_of: dict[str, set[int]] = defaultdict(set)
    for row in _select(rows, method=method):
        seeds_of[row["case"]].add(row["seed"])
    groups: dict[tuple[int, ...], int] = defaultdict(int)
    for seeds in seeds_of.values():
        groups[tuple(sorted(seeds))] += 1
    ordered = sorted(groups.items(), key=lambda item: (-len(item[0]), item[0]))
    return ", ".join(f"{n} volumes with seeds {list(seeds)}" for seeds, n in ordered)


def seed_tables(rows: list[Row], reference: str, others: list[str]) -> list[str]:
    """Where ``reference`` was run with several seeds: on the volumes where it and every
    listed method have all of them, each method's mean Dice per seed with the mean and standard
    deviation over seeds, and ``reference`` minus each method per seed (paired per volume)."""
    seeds = sorted({r["seed"] for r in _select(rows, method=reference)})
    if len(seeds) < 2:
        return []
    per_method = {m: _per_seed(rows, m, seeds) for m in [reference, *others]}
    complete = {
        m: set.intersection(*(set(by_seed[s]) for s in seeds)) for m, by_seed in per_method.items()
    }
    methods = [m for m in [reference, *others] if len(complete[m]) >= 2]
    if len(methods) < 2 or methods[0] != reference:
        return []
    cases = sorted(set.intersection(*(complete[m] for m in methods)))
    if len(cases) < 2:
        return []
    heads = " | ".join(f"seed {s}" for s in seeds)
    lines = [
        f"Seeds {seeds} on the {len(cases)} volumes that have all of them for every method "
        "below: mean Dice per seed, then the mean ± standard deviation of those seed means.",
        "",
        f"| method | {heads} | over seeds |",
        "|---|" + "---|" * (len(seeds) + 1),
    ]
    for method in methods:
        means = [float(np.mean([per_method[method][s][c] for c in cases])) for s in seeds]
        cells = " | ".join(f"{m:.3f}" for m in means)
        lines.append(f"| {method} | {cells} | {_fmt(*mean_sd(means))} |")
    lines += [
        "",
        f"| {reference} minus | {heads} | seeds averaged per volume | CI excludes 0 "
        "(every seed; averaged) |",
        "|---|" + "---|" * (len(seeds) + 2),
    ]
    ours = per_method[reference]
    for other in methods[1:]:
        theirs = per_method[other]
        differences = [
            paired_difference([ours[s][c] for c in cases], [theirs[s][c] for c in cases])
            for s in seeds
        ]
        averaged = paired_difference(
            [float(np.mean([ours[s][c] for s in seeds])) for c in cases],
            [float(np.mean([theirs[s][c] for s in seeds])) for c in cases],
        )
        every = all(excludes_zero(d) and d.mean > 0 for d in differences) or all(
            excludes_zero(d) and d.mean < 0 for d in differences
        )
        if len(cases) < MIN_VOLUMES_FOR_VERDICT:
            verdict = f"n < {MIN_VOLUMES_FOR_VERDICT}: no verdict"
        else:
            verdict = f"{'yes' if every else 'no'}; {'yes' if excludes_zero(averaged) else 'no'}"
        cells = " | ".join(format_difference(d) for d in [*differences, averaged])
        lines.append(f"| {other} | {cells} | {verdict} |")
    return [*lines, ""]


def _new_axes():
    """A figure and its axes, drawn off-screen."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt.subplots(figsize=(6.4, 4.2), dpi=110)


def _save(figure, axes, path: Path, title: str) -> None:
    from matplotlib import pyplot as plt

    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def dice_by_slices_plot(rows: list[Row], methods: list[str], path: Path, title: str) -> None:
    figure, axes = _new_axes()
    counts = sorted({r["k"] for r in rows})
    for method in methods:
        means, errors, ks = [], [], []
        for k in counts:
            chosen = _select(rows, method=method, k=k, budget=_budget(method))
            values = list(per_volume(chosen, lambda r: r["mean_dice"]).values())
            if values:
                mean, sd = mean_sd(values)
                ks.append(k)
                means.append(mean)
                errors.append(sd / max(1.0, np.sqrt(len(values))))
        if ks:
            axes.errorbar(ks, means, yerr=errors, marker="o", capsize=3, label=method)
    axes.set_xlabel("annotated axial slices per volume")
    axes.set_ylabel("mean Dice (± standard error over volumes)")
    axes.set_xticks(counts)
    _save(figure, axes, path, title)


def annotate_next_plot(rows: list[Row], path: Path, title: str) -> None:
    figure, axes = _new_axes()
    start = _select(rows, strategy="all", round=0)
    for strategy in next_strategies(rows):
        xs, ys = [], []
        for index in sorted({r["round"] for r in rows}):
            chosen = start if index == 0 else _select(rows, strategy=strategy, round=index)
            values = list(per_volume(chosen, lambda r: r["mean_dice"]).values())
            annotated = [r["annotated"] for r in chosen]
            if values:
                xs.append(float(np.mean(annotated)))
                ys.append(float(np.mean(values)))
        axes.plot(xs, ys, marker="o", label=strategy)
    axes.set_xlabel("annotated slices per volume")
    axes.set_ylabel("mean Dice")
    _save(figure, axes, path, title)


NEXT_ORDER = {"suggested": 0, "even": 1, "random": 2}
"""Annotate-next strategies in table order; others (suggestion variants) follow by name."""


def next_strategies(rows: list[Row]) -> list[str]:
    """The annotate-next strategies present in ``rows``, in table order."""
    named = {r["strategy"] for r in rows if r["round"] > 0}
    return sorted(named, key=lambda name: (NEXT_ORDER.get(name, len(NEXT_ORDER)), name))


def next_differences(rows: list[Row], strategy: str, other: str) -> list[str]:
    """``strategy`` minus ``other`` per volume after each round, and against ``other`` one
    round later (2 slices more, where the suggestions ran out of none): at or above it there,
    the suggestions saved 2 slices."""

    def dice(name: str, index: int) -> dict[str, float]:
        return per_volume(_select(rows, strategy=name, round=index), lambda r: r["mean_dice"])

    last = max(r["round"] for r in rows)
    lines = []
    for index, later, note in [(i, i, "") for i in range(1, last + 1)] + [
        (i, i + 1, f" at round {i + 1} (one round more)") for i in range(1, last)
    ]:
        a, b = dice(strategy, index), dice(other, later)
        cases = sorted(set(a) & set(b))
        if len(cases) >= 2:
            d = paired_difference([a[c] for c in cases], [b[c] for c in cases])
            lines.append(f"- round {index}, {strategy} minus {other}{note}: {format_difference(d)}")
    return lines


def _budget(method: str) -> str:
    return "none" if method.startswith("interpolation") else "time"


def build(setting: str, folder: Path, docs: Path, label: str | None = None) -> str:
    """The markdown report of one setting; plots are written beside it."""
    label = label or setting
    images = docs / "images"
    images.mkdir(parents=True, exist_ok=True)
    rates = _read_json(folder / "rates.json")
    runtime = (folder / "runtime.txt").read_text().strip() if (folder / "runtime.txt").is_file()\
        else "not recorded"  # fmt: skip
    out = [f"## Setting `{setting}`", ""]
    out += [f"Command: `python -m benchmarks.real_data --setting {setting}`, then "
            f"`python -m benchmarks.report --setting {setting}`. Runtime log:", "",
            "```", runtime, "```", ""]  # fmt: skip
    if rates:
        out += [
            (
                "Training rates in use (rebased, see below)"
                if rates.get("rebased_to")
                else "Training rates measured side by side before the runs"
            )
            + f" ({rates.get('machine')}; "
            f"case {rates['case']}, {rates['slices']} slices): iterations per second "
            + ", ".join(f"{m} {r}" for m, r in rates["iterations_per_second"].items())
            + "; setup seconds "
            + ", ".join(f"{m} {r}" for m, r in rates["setup_seconds"].items())
            + ". Each learned method gets (budget − setup) × rate iterations.",
            "",
        ]
        if rates.get("rebased_to"):
            out += [
                "The rates were measured again before the latest rows and rebased to "
                f"{rates['rebased_to']}, so those rows stay at equal wall-clock time; measured: "
                + ", ".join(f"{m} {r}" for m, r in rates["measured_iterations_per_second"].items())
                + " iterations per second. Rows named `<method>-<n>-iterations` were made at the "
                "earlier rates (`rates-history.jsonl`) and superseded by the rerun.",
                "",
            ]
    interactive = read_rows(folder, "interactive")
    if interactive:
        earlier = sorted({r["method"] for r in interactive} - {"crii", *BASELINES})
        methods = ["crii", *BASELINES, *earlier]  # earlier: superseded rows and variants
        machine = interactive[0].get("machine", "")
        out += ["### Interactive protocol (test volumes, k annotated axial slices)", ""]
        for k in sorted({r["k"] for r in interactive}):
            rows_k = [r for r in interactive if r["k"] == k]
            timed = [r for r in rows_k if r.get("budget") in ("time", "none")]
            out += [f"**k = {k}**, equal wall-clock budget ({machine})", ""]
            if len({r["seed"] for r in _select(timed, method="crii")}) > 1:
                out += [
                    "Per volume, the mean over the seeds it has (crii: "
                    + seed_coverage(timed, "crii")
                    + "); the seed tables follow.",
                    "",
                ]
            out += [*method_table(timed, methods), ""]
            out += [*difference_table(timed, "crii", list(BASELINES)), ""]
            out += seed_tables(timed, "crii", list(BASELINES))
            for variant in [v for v in CRII_VARIANTS if _select(timed, method=v)]:
                unfinished = same_run_rows(_select(timed, method=variant))
                paired = sorted({r["method"] for r in unfinished})
                others = [*paired, "crii", *BASELINES, *VARIANT_BASELINES]
                seeds = sorted({r["seed"] for r in _select(timed, method=variant)})
                out += seed_tables(timed, variant, ["crii", *BASELINES])
                for seed in seeds:
                    out += [f"`{variant}`, seed {seed} (every method's seed-{seed} rows):", ""]
                    out += [*difference_table(timed + unfinished, variant, others, seed=seed)]
                    out += [""]
            equal = [r for r in rows_k if r.get("budget") == "iterations"]
            if equal:
                supervised = [r for r in rows_k if r["method"] == "supervised"
                              and r.get("budget") == "time"]  # fmt: skip
                rows_eq = equal + supervised
                out += [f"k = {k}, equal iterations (those of supervised):", ""]
                out += [*method_table(rows_eq, ["crii", "supervised", "mean-teacher"]), ""]
                out += [*difference_table(rows_eq, "crii", ["supervised", "mean-teacher"]), ""]
        plot = images / f"results-{label}-dice-vs-slices.png"
        current = ["crii", *BASELINES]  # superseded rows stay in the tables, not the plot
        dice_by_slices_plot(interactive, current, plot, f"{setting} setting, test volumes")
        out += [f"![Dice against annotated slices](images/{plot.name})", ""]
    ablation = read_rows(folder, "ablation")
    if ablation:
        runs = {(r["case"], r["seed"]) for r in ablation}
        reference = [r for r in interactive if r["method"] == "crii" and r.get("k") == 3
                     and r.get("budget") == "time"
                     and (r["case"], r["seed"]) in runs]  # fmt: skip
        variants = sorted({r["method"] for r in ablation})
        rows = ablation + reference
        out += ["### Ablation (k = 3, at crii's iterations)", ""]
        out += [*method_table(rows, ["crii", *variants]), ""]
        out += [*difference_table(rows, "crii", variants), ""]
    following = read_rows(folder, "annotate-next")
    if following:
        out += ["### Annotate-next (crii, warm start, 2 slices per round)", ""]
        out += ["| strategy | " + " | ".join(f"round {i}" for i in range(4)) + " |",
                "|---|---|---|---|---|"]  # fmt: skip
        start = per_volume(_select(following, round=0), lambda r: r["mean_dice"])
        strategies = next_strategies(following)
        for strategy in strategies:
            cells = [_fmt(*mean_sd(list(start.values())))]
            for index in (1, 2, 3):
                chosen = _select(following, strategy=strategy, round=index)
                values = list(per_volume(chosen, lambda r: r["mean_dice"]).values())
                cells.append(_fmt(*mean_sd(values)) if values else "–")
            out.append(f"| {strategy} | " + " | ".join(cells) + " |")
        out.append("")
        for strategy in [name for name in strategies if name.startswith("suggested")]:
            for other in ("even", "random"):
                out += next_differences(following, strategy, other)
        out.append("")
        plot = images / f"results-{label}-annotate-next.png"
        annotate_next_plot(following, plot, f"{setting} setting: Dice per round")
        out += [f"![Dice per round](images/{plot.name})", ""]
    dataset = read_rows(folder, "dataset")
    if dataset:
        methods = ["crii", "supervised", "mean-teacher", "supervised-all-208"]
        out += ["### Dataset protocol (8 labeled train volumes + the rest unlabeled)", ""]
        out += [*method_table(dataset, methods), ""]
        out += [*difference_table(dataset, "crii", ["supervised", "mean-teacher"]), ""]
    own_speed = folder / "speed.json"  # a setting run elsewhere (a GPU) brings its own
    speed = _read_json(own_speed if own_speed.is_file() else folder.parent / "speed.json")
    if speed:
        out += speed_table(speed)
    phantom = _read_json(folder / "gpu_check.json")
    if phantom:
        out += phantom_speed_table(phantom)
    return "\n".join(out)


def speed_table(rows: list[Row]) -> list[str]:
    """The rows of benchmarks/speed.py: one training round per method and precision."""
    out = [
        f"### Speed and memory ({rows[0]['machine']}, `python -m benchmarks.speed`)",
        "",
        f"One round of {rows[0]['budget_seconds']:g} s on a {tuple(rows[0]['volume_shape'])} "
        "hippocampus volume, 3 annotated slices, a preview after 1 s then every 3 s, each "
        "configuration in "
        "a fresh process.",
        "",
        "| method | precision | iterations / s | first preview s | round s | inference s "
        "| peak memory MiB | peak GPU memory MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        out.append(
            f"| {row['method']} | {row['precision']} | {row['iterations_per_second']} | "
            f"{row['first_preview_seconds']} | {row['round_seconds']} | "
            f"{row['inference_seconds']} | {row['peak_rss_mib']} | "
            f"{row.get('peak_cuda_mib', '–')} |"
        )
    return [*out, ""]


def phantom_speed_table(report: dict[str, Any]) -> list[str]:
    """The rows of benchmarks/gpu_check.py: fixed-iteration training on the phantom, CUDA in
    float32 and mixed precision beside the CPU of the same machine."""
    out = [
        f"### Training speed on the phantom ({report['gpu'] or 'no GPU'}; CPU {report['cpu']};"
        f" torch {report['torch']}, `python benchmarks/gpu_check.py`)",
        "",
        f"Volume {tuple(report['volume_shape'])}, slices {report['annotated_slices']} annotated;"
        " the median rate over the logging windows after the first.",
        "",
        "| device | mixed precision | batch | iterations | iterations / s | × CPU "
        "| whole-volume inference s | peak GPU memory MiB | Dice after training |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        out.append(
            f"| {row['device']} | {'yes' if row['mixed_precision'] else 'no'} | {row['batch']} "
            f"| {row['iterations']} | {row['iterations_per_second']} "
            f"| {row.get('speedup_vs_cpu', 1.0)} | {row['inference_seconds_whole_volume']} "
            f"| {row.get('peak_gpu_memory_mib', '–')} | {row['dice_after_training']} |"
        )
    return [*out, ""]


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="quick")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--print", action="store_true", help="print instead of writing")
    parser.add_argument("--label", help="names the page and plots (default: the setting), e.g. "
                        "quick-cuda for rows made on a GPU")  # fmt: skip
    args = parser.parse_args(argv)
    text = build(args.setting, args.results / args.setting, DOCS, args.label or args.setting)
    if args.print:
        print(text)
    else:
        path = DOCS / f"results-{args.label or args.setting}.md"
        path.write_text(text + "\n")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
