"""ConceptAttention's segmentation protocol: VOC / ImageNet-Segmentation readers on stand-in files, the metric's known answers."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from harness.config import DatasetConfig
from harness.data.concept_sets import build_imagenet_segmentation, build_voc_concepts
from harness.data.prompts import PromptRecord
from harness.errors import DataError
from harness.metrics.concept_segmentation import ConceptSegmentation
from harness.store.samples import Sample


def _dataset(path, **params):
    cfg = OmegaConf.structured(DatasetConfig)
    cfg.name, cfg.path, cfg.params = "x", str(path) if path else None, params
    return cfg


def _voc(root):
    """A VOC2012-shaped folder: img1 shows a cat (8) only, img2 a cat and a dog (12), 255 borders."""
    (root / "JPEGImages").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for name, classes in (("img1", [8]), ("img2", [8, 12])):
        labels = np.zeros((8, 8), np.uint8)
        for index, class_id in enumerate(classes):
            labels[1:6, 4 * index: 4 * index + 3] = class_id
        labels[7] = 255
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "JPEGImages" / f"{name}.jpg")
        palette_png = Image.frombytes("P", (8, 8), labels.tobytes())  # indexed colour, as VOC's PNGs
        palette_png.putpalette([value for index in range(256) for value in (index, 0, 255 - index)])
        palette_png.save(root / "SegmentationClass" / f"{name}.png")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("img1\nimg2\n")


def test_voc_single_and_multi_class(tmp_path):
    _voc(tmp_path)
    single = build_voc_concepts(_dataset(tmp_path, single_class=True)).records
    assert [r.id for r in single] == ["voc-img1"]
    assert single[0].meta["target"] == "cat" and single[0].meta["target_class"] == 8
    multi = build_voc_concepts(_dataset(tmp_path, single_class=False)).records
    assert multi[1].meta["nouns"] == ["cat", "dog"] and multi[1].prompt == "a photo of a cat and a dog"
    assert multi[1].meta["concept_classes"] == {"background": 0, "cat": 8, "dog": 12}
    with pytest.raises(DataError, match="ImageSets/Segmentation/test.txt"):
        build_voc_concepts(_dataset(tmp_path, split="test"))


def test_imagenet_segmentation_reads_the_mat_layout_and_names_a_missing_file(tmp_path):
    import h5py

    with pytest.raises(DataError, match="gtsegs_ijcv.mat does not exist"):
        build_imagenet_segmentation(_dataset(tmp_path))
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    mask = np.zeros((4, 6), np.uint8)
    mask[1:3, 2:5] = 1
    with h5py.File(tmp_path / "gtsegs_ijcv.mat", "w") as data:  # MATLAB v7.3 layout: references, column-major
        refs = h5py.special_dtype(ref=h5py.Reference)
        images = data.create_dataset("value/img", (1, 1), dtype=refs)
        masks = data.create_dataset("value/gt", (1, 1), dtype=refs)
        images[0, 0] = data.create_dataset("refs/i0", data=image.transpose(2, 1, 0)).ref
        masks[0, 0] = data.create_dataset("refs/m0", data=mask.transpose(1, 0)).ref
    (tmp_path / "names.txt").write_text("goldfish\n")
    records = build_imagenet_segmentation(_dataset(tmp_path, class_names=str(tmp_path / "names.txt"),
                                                   cache_dir=str(tmp_path / "cache"))).records
    assert len(records) == 1 and records[0].meta["target"] == "goldfish"
    assert np.array_equal(np.asarray(Image.open(records[0].meta["image_path"])), image)
    assert np.array_equal(np.asarray(Image.open(records[0].meta["label_path"])), mask)


def _record(tmp_path, labels, **meta):
    path = tmp_path / f"labels{len(list(tmp_path.iterdir()))}.png"
    Image.fromarray(labels.astype(np.uint8)).save(path)
    return PromptRecord("r", "p", 0, {"label_path": str(path), "ignore_index": 255, "label_transform": "none", **meta})


def test_binary_scores_known_answer(tmp_path):
    labels = np.zeros((4, 4), np.uint8)
    labels[:, :2] = 1  # left half foreground
    labels[3, 3] = 255  # ignored
    heat = np.zeros((4, 4), np.float32)
    heat[:, :3] = 1.0  # predicted: three left columns (above the mean 0.75)
    record = _record(tmp_path, labels, target="cat", target_class=1)
    sample = Sample(image=None, arrays={"heatmap:cat": heat, "heatmap:background": 1 - heat}, meta={"concepts": ["cat", "background"]})
    metric = ConceptSegmentation("binary")
    metric.process(record, sample)
    results = {r.metric: r.value for r in metric.compute()}
    # 15 labelled pixels; wrong: column 2 rows 0..3 (4 pixels) -> 11/15
    assert results["concept_pixel_accuracy"] == pytest.approx(11 / 15)
    # foreground IoU 8/12; background: intersection 3 (column 3, rows 0..2), union 7 -> mean
    assert results["concept_miou"] == pytest.approx((8 / 12 + 3 / 7) / 2)
    from sklearn.metrics import average_precision_score

    valid = labels.ravel() != 255
    assert results["concept_map"] == pytest.approx(average_precision_score((labels.ravel() == 1)[valid], heat.ravel()[valid]))


def test_multiclass_argmax_and_missing_maps(tmp_path):
    labels = np.array([[0, 8], [12, 12]])
    maps = {"heatmap:background": np.array([[1, 0], [0, 0]], np.float32), "heatmap:cat": np.array([[0, 1], [1, 0]], np.float32),
            "heatmap:dog": np.array([[0, 0], [0, 1]], np.float32)}
    record = _record(tmp_path, labels, concept_classes={"background": 0, "cat": 8, "dog": 12}, num_classes=21)
    metric = ConceptSegmentation("multiclass")
    metric.process(record, Sample(image=None, arrays=maps, meta={"concepts": ["background", "cat", "dog"]}))
    results = {r.metric: r.value for r in metric.compute()}
    assert results["concept_pixel_accuracy"] == pytest.approx(3 / 4)
    assert results["concept_miou"] == pytest.approx((1 + 1 / 2 + 1 / 2) / 3)  # classes 0, 8, 12
    with pytest.raises(DataError, match="lacks the maps"):
        metric.process(record, Sample(image=None, arrays={}, meta={"concepts": ["cat"]}))


@pytest.mark.parametrize("experiment,message", [
    ("concept_attention_imagenet_seg", "dataset=imagenet_segmentation needs dataset.path"),
    ("concept_attention_voc_single", "dataset=voc_concepts needs dataset.path"),
    ("concept_attention_voc_multi", "dataset=voc_concepts needs dataset.path")])
def test_paper_experiments_stop_with_the_missing_file_message(compose, experiment, message, tmp_path):
    from harness.errors import HarnessError
    from harness.run import run_experiment

    cfg = compose([f"experiment={experiment}", f"store.root={tmp_path / 'cache'}"])
    assert cfg.model.name == "flux_schnell" and cfg.method.name == "concept_attention"
    with pytest.raises(HarnessError, match=message):  # the data is looked for first
        run_experiment(cfg, tmp_path / "run")
    cfg = compose([f"experiment={experiment}", f"store.root={tmp_path / 'cache'}", "dataset=synthetic_concepts"])
    with pytest.raises(HarnessError) as raised:  # then the weights: FLUX.1-schnell is not here
        run_experiment(cfg, tmp_path / "run2")
    assert "FLUX.1-schnell" in str(raised.value) and "Looked in" in str(raised.value)
