"""Methods of the DAAM analyses: ``daam_words`` (DAAM on every word) and ``daam_swap`` (variants).

``method=daam_words``: DAAM with a map for every word of the prompt (``words_source=all``); its
figure hook draws the per-word overlays of the first :data:`OVERLAYS` records only (every word of
every record would cost minutes of plotting per run and show nothing the first ones do not).

``method=daam_swap``: DAAM on a prompt and on its variants, each generated with the prompt's seed.

For adjectival entanglement (DAAM, Tang et al., ACL 2023, section 6): a record's
``meta["variants"]`` maps a condition name (``adjective``, ``unrelated``, ``same``) to a prompt;
each variant is generated with the same generator seed as the prompt itself. The sample holds the
original image and heat maps (as ``method=daam``), each variant's image as
``arrays["image:<condition>"]`` and its maps of the swapped object's noun as
``arrays["heatmap_<condition>:<noun>"]``, and ``meta["variants"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.data.prompts import PromptRecord
from harness.errors import DataError
from harness.methods.daam import DAAM
from harness.store.samples import Sample

OVERLAYS = 8


class DAAMWords(DAAM):
    """DAAM on every word (module docstring); overlays of the first records only."""

    name = "daam_words"
    version = "1"

    def save_figures(self, run_dir: str | Path, records: list[PromptRecord], samples: Any,
                     rows: Any = None) -> list[Path]:
        """Overlays (image + map per word) of the first :data:`OVERLAYS` records into ``<run_dir>/figures/``."""
        from harness.heatmaps import save_overlays

        shown = records[:OVERLAYS]
        return save_overlays(run_dir, shown, {r.id: samples[r.id] for r in shown})


class DAAMSwap(DAAM):
    """DAAM maps of each prompt, plus images of its variants under the same seed (module docstring)."""

    name = "daam_swap"
    version = "1"

    def extra_spec(self, record: PromptRecord) -> dict[str, Any]:
        return {**super().extra_spec(record), "variants": _variants(record)}

    def run_batch(self, records: list[PromptRecord], seeds: list[int]) -> list[Sample]:
        samples = super().run_batch(records, seeds)
        conditions = sorted({c for r in records for c in _variants(r)})
        for condition in conditions:
            chosen = [i for i, r in enumerate(records) if condition in _variants(r)]
            variant_records = [PromptRecord(id=f"{records[i].id}:{condition}", prompt=_variants(records[i])[condition],
                                            seed=records[i].seed, meta=records[i].meta) for i in chosen]
            variant_samples = super().run_batch(variant_records, [seeds[i] for i in chosen])
            for i, variant in zip(chosen, variant_samples):
                sample = samples[i]
                sample.arrays[f"image:{condition}"] = variant.image
                noun = str(records[i].meta["swap"]["noun"]).lower()
                if f"heatmap:{noun}" in variant.arrays:
                    sample.arrays[f"heatmap_{condition}:{noun}"] = variant.arrays[f"heatmap:{noun}"]
        for record, sample in zip(records, samples):
            sample.meta["variants"] = _variants(record)
        return samples

    def save_figures(self, run_dir: str | Path, records: list[PromptRecord], samples: Any,
                     rows: Any = None) -> list[Path]:
        """The adjective-swap grid (original, swapped, change map, controls) into ``<run_dir>/figures/``."""
        from harness.analysis.figures import swap_grid

        return [swap_grid(Path(run_dir) / "figures" / "adjective_swaps.png", records, samples)]


def _variants(record: PromptRecord) -> dict[str, str]:
    variants = (record.meta or {}).get("variants")
    if not isinstance(variants, dict) or not variants or "swap" not in record.meta:
        raise DataError(f"record {record.id!r} has no meta['variants'] / meta['swap']; method=daam_swap needs an "
                        "adjective-swap dataset (toy_adjective_swaps, coco_adjective_swaps).")
    return {str(k): str(v) for k, v in variants.items()}
