"""FID: agreement with a direct scipy Fréchet distance, invariants, reference sets and their errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import linalg

from harness.data.prompts import PromptRecord
from harness.errors import DataError, MissingWeightsError
from harness.metrics.features import InceptionFidelity, InceptionTorchScript, PixelFeatures
from harness.metrics.fid import FID, RealImages, frechet_distance_from_features, minimum_samples_note
from harness.store.samples import Sample


def scipy_frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula, written independently: |mu1-mu2|^2 + Tr(S1 + S2 - 2 sqrt(S1 S2))."""
    mu1, mu2 = a.mean(axis=0), b.mean(axis=0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_on_fixed_features_equals_scipy():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(80, 12))
    fake = rng.normal(size=(70, 12)) @ rng.normal(scale=0.5, size=(12, 12)) + 0.4
    ours = frechet_distance_from_features(real, fake)
    assert ours == pytest.approx(scipy_frechet_distance(real, fake), rel=1e-8)
    assert ours > 1.0


def _images(seed: int, count: int, noise: float = 0.0, size: int = 16) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(count, size, size, 3)).astype(np.float64)
    if noise:
        base += np.random.default_rng(seed + 100).normal(scale=noise, size=base.shape)
    return list(np.clip(base, 0, 255).astype(np.uint8))


def _write_folder(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{index:03d}.png")
    return folder


def _fid(real_folder, images, tmp_path, **options) -> tuple[float, str]:
    metric = FID(features="pixels", pixel_size=2, real_images=str(real_folder), stats_cache=str(tmp_path / "stats"),
                 batch_size=3, **options)
    metric.reset()
    for index, image in enumerate(images):
        metric.process(PromptRecord(f"r{index}", "p", index), Sample(image=image))
    [result] = metric.compute()
    return result.value, result.definition


def test_fid_of_a_set_against_itself_is_zero_and_grows_with_noise(tmp_path):
    images = _images(0, 40)
    folder = _write_folder(tmp_path / "real", images)
    same, definition = _fid(folder, images, tmp_path)
    assert abs(same) < 1e-6
    assert "pixels" in definition and "antialias=True" in definition and "40 real" in definition
    values = [_fid(folder, [np.clip(i.astype(float) + n, 0, 255).astype(np.uint8) for i in images], tmp_path)[0]
              for n in (10, 40, 80)]
    assert 0 < values[0] < values[1] < values[2]


def test_batched_accumulation_equals_features_at_once(tmp_path):
    real, fake = _images(1, 30), _images(2, 25)
    folder = _write_folder(tmp_path / "real", real)
    value, _ = _fid(folder, fake, tmp_path)
    extractor = PixelFeatures(2)
    features = [extractor(torch.from_numpy(np.stack(s)).permute(0, 3, 1, 2)).double().numpy() for s in (real, fake)]
    assert value == pytest.approx(scipy_frechet_distance(*features), rel=1e-6)


def test_reference_statistics_are_cached_by_content(tmp_path):
    folder = _write_folder(tmp_path / "real", _images(3, 12))
    fake = _images(4, 12)
    first, _ = _fid(folder, fake, tmp_path)
    cached = sorted((tmp_path / "stats").glob("*.npz"))
    assert len(cached) == 1
    again, _ = _fid(folder, fake, tmp_path)
    assert again == first and sorted((tmp_path / "stats").glob("*.npz")) == cached
    Image.fromarray(_images(9, 1)[0]).save(folder / "000.png")  # new content: new statistics
    changed, _ = _fid(folder, fake, tmp_path)
    assert changed != first and len(list((tmp_path / "stats").glob("*.npz"))) == 2


def test_empty_real_folder_fails_clearly(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="holds no images.*1 other file"):
        FID(features="pixels", real_images=str(tmp_path / "empty"))
    with pytest.raises(DataError, match="does not exist"):
        FID(features="pixels", real_images=str(tmp_path / "missing"))


def test_unreadable_real_files_are_skipped_with_a_count_or_fail(tmp_path, caplog):
    folder = _write_folder(tmp_path / "real", _images(5, 10))
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    with caplog.at_level(logging.WARNING):
        _, definition = _fid(folder, _images(6, 10), tmp_path)
    assert "2 unreadable skipped" in definition and "10 real" in definition
    assert "skipped 2 unreadable file(s)" in caplog.text
    with pytest.raises(DataError, match="broken.png cannot be read"):
        _fid(folder, _images(6, 10), tmp_path / "other", on_unreadable="error")
    only_broken = tmp_path / "broken_only"
    only_broken.mkdir()
    (only_broken / "x.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="no readable image"):
        _fid(only_broken, _images(6, 3), tmp_path / "third")


def test_too_few_samples_warns_with_the_number_needed(tmp_path, caplog):
    folder = _write_folder(tmp_path / "real", _images(7, 20))
    with caplog.at_level(logging.WARNING):
        _, definition = _fid(folder, _images(8, 5), tmp_path)  # pixel_size 2: 12-d features
    assert "Use at least 13 samples" in caplog.text and "WARNING" in definition
    assert minimum_samples_note(13, 12) is None


def test_real_source_callable(tmp_path):
    metric = FID(features="pixels", pixel_size=2, real_source="harness.toy.data:render_pool",
                 real_source_options={"split": "toy_gen", "n": 8, "workers": 1}, stats_cache=str(tmp_path / "s"))
    arrays = metric.real.arrays()
    assert arrays.shape == (8, 32, 32, 3) and arrays.dtype == np.uint8
    assert RealImages(source="harness.toy.data:render_pool",
                      source_options={"split": "toy_gen", "n": 8, "workers": 1}).content_hash() == metric.real.content_hash()


def test_offline_torchscript_inception_gives_2048_features():
    extractor = InceptionTorchScript(antialias=True)
    images = torch.from_numpy(np.stack(_images(10, 2, size=32))).permute(0, 3, 1, 2).contiguous()
    features = extractor(images)
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    assert not torch.allclose(features[0], features[1])
    assert "sha256:" in extractor.identity() and "antialias=True" in extractor.resize_description()


def test_missing_fidelity_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MissingWeightsError) as caught:
        InceptionFidelity.locate(str(tmp_path / "nowhere.pth"))
    message = str(caught.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in message and str(tmp_path / "nowhere.pth") in message
    assert "inception_torchscript" in message  # the offline alternative is named


def test_fidelity_inception_loads_a_local_weights_file_safely(tmp_path, monkeypatch):
    """The standard-weights path, exercised with random weights in torch-fidelity's layout."""
    import torch_fidelity.feature_extractor_inceptionv3 as fidelity

    with monkeypatch.context() as patch:  # build one network without any weights to get the layout
        patch.setattr(fidelity, "load_state_dict_from_url", lambda *a, **k: {})
        patch.setattr(fidelity.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        layout = fidelity.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).state_dict()
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(layout, path)
    extractor = InceptionFidelity(str(path), antialias=False, device="cpu")
    images = torch.from_numpy(np.stack(_images(11, 2, size=32))).permute(0, 3, 1, 2).contiguous()
    assert extractor(images).shape == (2, 2048)
    assert extractor.logits(images).shape == (2, 1008)
    assert "tf1-style" in extractor.resize_description() and "sha256:" in extractor.identity()


def test_auto_features_fall_back_to_the_offline_inception(tmp_path, monkeypatch):
    from harness.metrics.features import resolve_extractor_name

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert resolve_extractor_name("auto", None) == "inception_torchscript"
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    assert resolve_extractor_name("auto", str(weights)) == "inception_fidelity"
    assert resolve_extractor_name("pixels", None) == "pixels"


def test_generated_features_are_kept_as_running_statistics_not_per_sample(tmp_path):
    folder = _write_folder(tmp_path / "real", _images(3, 12))
    metric = FID(features="pixels", pixel_size=2, real_images=str(folder), stats_cache=str(tmp_path / "stats"),
                 batch_size=4)
    metric.reset()
    for index, image in enumerate(_images(4, 21)):
        metric.process(PromptRecord(f"r{index}", "p", index), Sample(image=image))
    [result] = metric.compute()
    assert result.n == metric.fake_count == 21
    state = metric.fake_statistics
    dims = metric.extractor.num_features
    # the state is one d-vector and one d x d matrix, whatever the number of samples
    assert tuple(state.fake_features_sum.shape) == (dims,)
    assert tuple(state.fake_features_cov_sum.shape) == (dims, dims)
    assert metric.pending == [] and not any(isinstance(v, list) and v for v in vars(metric).values())
