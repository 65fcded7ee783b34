"""The analyses' metrics on hand-built samples (maps, masks and images with known answers)."""

import math

import numpy as np
import pytest

from harness.data.prompts import PromptRecord
from harness.errors import HarnessError
from harness.metrics.daam_analyses import (
    AdjectiveEntanglement,
    CohyponymEntanglement,
    DaamPOS,
    DaamSyntax,
    two_sample_bootstrap,
    wilson_interval,
)
from harness.store.samples import Sample


class FixedTruth:
    """A ground truth that returns the same masks for every sample."""

    def __init__(self, masks):
        self._masks = masks

    def masks(self, record, sample):
        return self._masks


def block(rows, cols, size=4):
    mask = np.zeros((size, size), bool)
    mask[rows[0]:rows[1], cols[0]:cols[1]] = True
    return mask


def rows_of(results):
    return {(r.metric, r.extra.get("item")): r for r in results}


def test_daam_pos_scores_visible_words_and_gives_mass_outside_for_the_rest():
    circle = block((0, 2), (0, 2))  # 4 of 16 pixels
    record = PromptRecord("s", "a red circle", 0, {"nouns": ["circle"]})
    heat = {
        "circle": circle.astype(np.float32),  # exactly the object: IoU 1
        "red": block((0, 2), (0, 4)).astype(np.float32),  # 8 pixels, 4 on the object: IoU 0.5
        "a": np.where(circle, 1.0, 3.0 / 12).astype(np.float32),  # mass 4 inside, 3 outside
    }
    sample = Sample(image=np.zeros((4, 4, 3), np.uint8), arrays={f"heatmap:{w}": m for w, m in heat.items()})
    metric = DaamPOS(threshold=0.5, ground_truth=FixedTruth({"circle": circle, "red": circle}), visible="toy")
    per_sample = {(r["metric"], r["item"]): r["value"] for r in metric.process(record, sample)}
    assert per_sample[("daam_pos.mass_outside", "DET")] == pytest.approx(3 / 7)
    results = rows_of(metric.compute())
    assert results[("daam_pos.miou", "NOUN")].value == 1.0
    assert results[("daam_pos.miou", "ADJ")].value == pytest.approx(0.5)
    assert results[("daam_pos", None)].value == pytest.approx(0.75)  # every word with a mask
    assert results[("daam_pos.no_referent", "DET")].value == 1.0
    assert results[("daam_pos.no_referent", "NOUN")].value == 0.0
    assert results[("daam_pos.area_outside", "DET")].value == pytest.approx(12 / 16)
    low, high = results[("daam_pos.no_referent", "DET")].ci_low, results[("daam_pos.no_referent", "DET")].ci_high
    assert 0.0 <= low < 1.0 and high == pytest.approx(1.0)


def test_daam_pos_annotated_rule_and_absent_objects():
    record = PromptRecord("s", "a red circle", 0, {"nouns": ["circle"]})
    sample = Sample(image=np.zeros((4, 4, 3), np.uint8),
                    arrays={"heatmap:circle": np.ones((4, 4), np.float32), "heatmap:red": np.ones((4, 4), np.float32)})
    # toy rule: "circle" denotes something, but the image has no circle -> absent, not scored
    toy = DaamPOS(ground_truth=FixedTruth({}), visible="toy")
    toy.process(record, sample)
    with pytest.raises(HarnessError):  # nothing scored: never a silent missing row
        toy.compute()
    toy.optional = True
    results = rows_of(toy.compute())
    assert math.isnan(results[("daam_pos", None)].value)
    assert results[("daam_pos.absent", "NOUN")].value == 1.0 and ("daam_pos.miou", "NOUN") not in results
    # annotated rule: a word without a mask counts as having no referent
    annotated = DaamPOS(ground_truth=FixedTruth({}), visible="annotated")
    annotated.optional = True
    annotated.process(record, sample)
    assert rows_of(annotated.compute())[("daam_pos.no_referent", "NOUN")].value == 1.0


def test_daam_syntax_per_relation_on_raw_maps_and_the_ground_truth_ceiling():
    record = PromptRecord("s", "a red circle", 0, {"nouns": ["circle"]})
    circle = block((0, 2), (0, 2))
    maps = {
        "circle": np.where(circle, 0.5, 0.1),  # > 0.15 on 4 pixels
        "red": np.where(block((0, 2), (0, 4)), 0.2, 0.0),  # > 0.15 on 8 pixels, 4 shared with circle
        "a": np.where(block((3, 4), (0, 1)), 0.9, 0.05),  # 1 pixel, disjoint from circle
    }
    sample = Sample(image=np.zeros((4, 4, 3), np.uint8), arrays={f"heatmap:{w}": m for w, m in maps.items()})
    metric = DaamSyntax(threshold=0.15, scale="raw", ground_truth=FixedTruth({"circle": circle, "red": circle}))
    metric.process(record, sample)
    results = rows_of(metric.compute())
    # amod(circle, red): H = circle (4 px), D = red (8 px), 4 shared
    assert results[("daam_syntax.miou", "amod")].value == pytest.approx(4 / 8)
    assert results[("daam_syntax.miod", "amod")].value == pytest.approx(4 / 8)
    assert results[("daam_syntax.mioh", "amod")].value == pytest.approx(4 / 4)
    assert results[("daam_syntax.gt_miou", "amod")].value == 1.0  # the ceiling: same object
    assert results[("daam_syntax.miou", "det")].value == 0.0
    assert results[("daam_syntax", None)].value == pytest.approx((0.5 + 0.0) / 2)  # headline: every pair
    assert results[("daam_syntax.miou", "det")].n == 1
    assert ("daam_syntax.gt_miou", "det") not in results  # "a" has no mask
    # min-max scale: "a" at 0.9 vs 0.05 -> normalised 1 vs 0; the same binary map
    minmax = DaamSyntax(threshold=0.5, scale="minmax")
    minmax.process(record, sample)
    assert rows_of(minmax.compute())[("daam_syntax.miou", "amod")].value == pytest.approx(4 / 8)


def wilson(successes, total, z=1.959963984540054):
    p = successes / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return centre - half, centre + half


@pytest.mark.parametrize("successes,total", [(5, 10), (0, 7), (13, 20)])
def test_wilson_interval_matches_the_closed_form(successes, total):
    assert wilson_interval(successes, total) == pytest.approx(wilson(successes, total), abs=1e-9)
    assert wilson_interval(successes, total)[0] >= 0.0


def test_cohyponym_accuracy_difference_and_noun_overlap():
    metric = CohyponymEntanglement(judge="none", threshold=0.5)
    metric._judge = lambda image, record: record.meta["ok"]
    left, right = block((0, 4), (0, 2)), block((0, 4), (2, 4))
    outcomes = {True: [1, 0, 0, 1], False: [1, 1, 1, 0]}
    for flag, values in outcomes.items():
        for k, ok in enumerate(values):
            record = PromptRecord(f"{flag}{k}", "a circle and a star", k,
                                  {"nouns": ["circle", "star"], "cohyponym": flag, "ok": ok})
            star = left if flag else right  # cohyponym prompts: both nouns on the left half (IoU 1)
            sample = Sample(image=np.zeros((4, 4, 3), np.uint8),
                            arrays={"heatmap:circle": left.astype(np.float32), "heatmap:star": star.astype(np.float32)})
            metric.process(record, sample)
    results = rows_of(metric.compute())
    assert results[("cohyponym_entanglement.accuracy", "cohyponym")].value == 0.5
    assert results[("cohyponym_entanglement.accuracy", "non_cohyponym")].value == 0.75
    difference = results[("cohyponym_entanglement", None)]  # the headline: the accuracy difference
    assert difference.value == pytest.approx(-0.25)
    assert difference.ci_low <= -0.25 <= difference.ci_high
    assert results[("cohyponym_entanglement.noun_overlap", "cohyponym")].value == 1.0
    assert results[("cohyponym_entanglement.noun_overlap", "non_cohyponym")].value == 0.0


def test_two_sample_bootstrap_is_seeded_and_brackets_the_difference():
    first, second = np.array([1.0, 1, 1, 0, 1, 1]), np.array([0.0, 0, 1, 0, 0, 1])
    interval = two_sample_bootstrap(first, second, 500, seed=3)
    assert interval == two_sample_bootstrap(first, second, 500, seed=3)
    assert interval[0] < first.mean() - second.mean() < interval[1]
    assert two_sample_bootstrap(first[:1], second, 500) == (None, None)


def swap_record():
    return PromptRecord("s", "a red circle and a blue star", 0, {
        "nouns": ["circle", "star"],
        "swap": {"word": "red", "to": "green", "noun": "circle", "object": 0},
        "variants": {"adjective": "a green circle and a blue star", "same": "a red circle and a blue star",
                     "unrelated": "a red circle and a purple star"}})


def test_adjective_entanglement_inside_outside_and_controls():
    region = block((0, 2), (0, 2), size=8)  # the circle: 4 of 64 pixels
    image = np.zeros((8, 8, 3), np.uint8)
    adjective = image.copy()
    adjective[region] = (255, 0, 0)  # change 1.0 on every inside pixel
    adjective[7, 7] = (0, 255, 0)  # and 1.0 on one of the 60 outside pixels
    unrelated = image.copy()
    unrelated[6:8, 6:8] = (0, 0, 255)  # only outside
    noun_map = region.astype(np.float32)
    arrays = {"heatmap:circle": noun_map, "heatmap:red": block((0, 4), (0, 2), size=8).astype(np.float32),
              "image:adjective": adjective, "image:same": image.copy(), "image:unrelated": unrelated,
              "heatmap_adjective:circle": noun_map, "heatmap_same:circle": noun_map, "heatmap_unrelated:circle": noun_map}
    sample = Sample(image=image, arrays=arrays, meta={"variants": swap_record().meta["variants"]})
    metric = AdjectiveEntanglement(region="daam", features="pixels", threshold=0.5)
    metric.process(swap_record(), sample)
    results = rows_of(metric.compute())
    assert results[("adjective_entanglement.inside", "adjective")].value == pytest.approx(1.0)
    assert results[("adjective_entanglement.outside", "adjective")].value == pytest.approx(math.sqrt(1 / 60))
    assert results[("adjective_entanglement.ratio", "adjective")].value == pytest.approx(math.sqrt(1 / 60))
    assert results[("adjective_entanglement", "adjective")].value == pytest.approx(math.sqrt(1 / 60))  # headline
    assert results[("adjective_entanglement.inside", "same")].value == 0.0
    assert results[("adjective_entanglement.outside", "same")].value == 0.0
    assert ("adjective_entanglement.ratio", "same") not in results  # no change anywhere: no ratio
    assert results[("adjective_entanglement.inside", "unrelated")].value == 0.0
    assert results[("adjective_entanglement.outside", "unrelated")].value == pytest.approx(math.sqrt(4 / 60))
    assert results[("adjective_entanglement.feature_inside", "same")].value == 0.0
    assert results[("adjective_entanglement.feature_inside", "adjective")].value > 0.0
    # the adjective's mask (8 pixels) spreads beyond the noun's (4 pixels) by half
    assert results[("adjective_entanglement.spread_beyond_noun", "adjective")].value == pytest.approx(0.5)
