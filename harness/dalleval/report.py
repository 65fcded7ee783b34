"""Markdown tables of skill and bias runs, from their rows (``rows.parquet`` under a run or sweep folder).

    harness dalleval-report skills results/skills_toy_test
    harness dalleval-report bias results/bias_toy_test

``skills``: one line per skill, one column per dataset (value [95% interval], n); an empty cell
carries its note. ``bias``: per attribute, each measure for the model, the training
distribution, the training distribution at the model's n, and the difference; then, per shape,
the distribution of each attribute the model produced next to the training distribution.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd


def _rows(folder: str) -> pd.DataFrame:
    from harness.errors import DataError
    from harness.store.rows import read_rows

    files = sorted(Path(folder).rglob("rows.parquet"))
    if not files:
        raise DataError(f"no rows.parquet under {folder}")
    return pd.concat([read_rows(f) for f in files], ignore_index=True)  # each checked against its manifest


def _cell(row: pd.Series) -> str:
    if row is None or pd.isna(row["value"]):
        return ""
    text = f"{row['value']:.3f}"
    if not pd.isna(row.get("ci_low")) and not pd.isna(row.get("ci_high")):
        # a zero-width interval (every resample the same) is marked, not shown as [x, x]
        text += (f" [{row['ci_low']:.3f}, {row['ci_high']:.3f}]" if not math.isclose(row["ci_low"], row["ci_high"], rel_tol=1e-9, abs_tol=1e-12)
                 else " [zero width]")
    return f"{text} (n={int(row['n'])})"


def skills_table(folder: str) -> str:
    rows = _rows(folder)
    rows = rows[(rows["level"] == "aggregate") & rows["metric"].str.startswith(("skill.", "binding_attention."))]
    datasets = list(dict.fromkeys(rows["dataset"]))
    lines = ["| skill | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    notes = {}
    for metric in dict.fromkeys(rows["metric"]):
        cells = []
        for dataset in datasets:
            match = rows[(rows["metric"] == metric) & (rows["dataset"] == dataset)]
            row = match.iloc[0] if len(match) else None
            if row is not None and pd.isna(row["value"]):
                notes[metric] = row["definition"]
                cells.append("(see note)")
            else:
                cells.append(_cell(row))
        lines.append(f"| {metric.removeprefix('skill.')} | " + " | ".join(cells) + " |")
    for metric, note in notes.items():
        lines.append(f"\n{metric.removeprefix('skill.')}: {note}")
    return "\n".join(lines)


def bias_table(folder: str) -> str:
    from harness.dalleval.bias_toy import ATTRIBUTES, training_distribution

    rows = _rows(folder)
    aggregate = rows[rows["level"] == "aggregate"].set_index("metric")
    out = ["| attribute | measure | model [95% bootstrap] | training | copying generator at model's n [2.5-97.5%] | model - copying |",
           "|---|---|---|---|---|---|"]
    for attribute in ATTRIBUTES:
        for measure in ("mad", "tv", "entropy"):
            key = f"bias.{attribute}.{measure}"
            if key not in aggregate.index:
                continue

            def value(k: str) -> str:
                return f"{aggregate.loc[k, 'value']:.3f}" if k in aggregate.index else ""

            out.append(f"| {attribute} | {measure} | {_cell(aggregate.loc[key])} | {value(key + '.train')} | "
                       f"{_cell(aggregate.loc[key + '.train_at_n'])} | {value(key + '.amplification')} |")
    samples = rows[(rows["level"] == "sample") & rows["metric"].str.startswith("bias_label.")]
    out.append("\nPer shape: share of each category among the detected objects, model / training "
               "(training: objects of that shape whose caption leaves the attribute unsaid, 20,000 sampled "
               "one- and two-object train scenes pooled).")
    for attribute in ("colour", "size", "position"):
        labels = samples[samples["metric"] == f"bias_label.{attribute}"]["item"].str.split("=", expand=True)
        if labels.empty:
            continue
        labels.columns = ["shape", "label"]
        categories = ATTRIBUTES[attribute]
        out.append(f"\n{attribute}:\n\n| shape | n | " + " | ".join(categories) + " |\n|---|---|" + "---|" * len(categories))
        for shape, group in labels.groupby("shape"):
            detected = group[group["label"] != "undetected"]["label"]
            counts = detected.value_counts()
            train = [training_distribution(attribute, shape, n) for n in (1, 2)]
            total = sum(t for _, t in train)
            pooled = sum(p * t for p, t in train) / total if total else None
            cells = []
            for k, category in enumerate(categories):
                model = counts.get(category, 0) / len(detected) if len(detected) else math.nan
                cells.append(f"{model:.2f} / {pooled[k]:.2f}" if pooled is not None else f"{model:.2f}")
            out.append(f"| {shape} | {len(detected)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness dalleval-report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=("skills", "bias"))
    parser.add_argument("folder")
    args = parser.parse_args(argv)
    print(skills_table(args.folder) if args.kind == "skills" else bias_table(args.folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
