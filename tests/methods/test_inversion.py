"""DDPM edit-friendly inversion: exact regeneration from every step, and the timestep grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from harness.inversion import decode_latents, invert, regenerate, snap_timestep, timestep_grid


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    return (rng.random((32, 32, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_regeneration_reproduces_the_image_from_every_step(emerdiff_tiny_model, image, guidance_scale):
    pipeline = emerdiff_tiny_model.pipeline
    inversion = invert(pipeline, image, num_inference_steps=4, guidance_scale=guidance_scale,
                       generator=torch.Generator().manual_seed(0))
    assert inversion.latents.shape[0] == 5 and inversion.noises.shape[0] == 4
    reference = decode_latents(pipeline, inversion.x0)
    scale = inversion.x0.abs().max().item()
    for start in range(4):
        x0 = regenerate(pipeline, inversion, start, batch_size=2)
        assert x0.shape[0] == 2
        assert (x0 - inversion.x0).abs().max().item() < 1e-4 * max(scale, 1.0)
        assert (decode_latents(pipeline, x0) - reference).abs().max().item() < 1e-3


def test_the_stored_noises_matter(emerdiff_tiny_model, image):
    """Regeneration with other noises ends elsewhere: the exact match above is not trivial."""
    pipeline = emerdiff_tiny_model.pipeline
    inversion = invert(pipeline, image, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    inversion.noises[1] = torch.randn(inversion.noises[1].shape, generator=torch.Generator().manual_seed(9))
    x0 = regenerate(pipeline, inversion, 0)
    assert (x0 - inversion.x0).abs().max().item() > 1e-2


def test_inversion_is_deterministic_given_the_generator(emerdiff_tiny_model, image):
    pipeline = emerdiff_tiny_model.pipeline
    first = invert(pipeline, image, num_inference_steps=3, generator=torch.Generator().manual_seed(5))
    second = invert(pipeline, image, num_inference_steps=3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first.noises, second.noises) and torch.equal(first.latents, second.latents)


def test_the_grid_is_sds_and_281_is_on_the_50_step_grid(emerdiff_tiny_model):
    grid = timestep_grid(emerdiff_tiny_model.pipeline, 50)
    assert grid[0].item() == 981 and grid[-1].item() == 1 and len(grid) == 50
    index, value, note = snap_timestep(281, grid)
    assert (index, value, note) == (35, 281, None)
    assert 50 - index == 15  # the paper reruns 15 of 50 steps


def test_off_grid_timesteps_snap_to_the_nearest_with_a_note(emerdiff_tiny_model):
    grid = timestep_grid(emerdiff_tiny_model.pipeline, 4)
    assert grid.tolist() == [751, 501, 251, 1]
    index, value, note = snap_timestep(281, grid, "method.modulation_timestep")
    assert (index, value) == (2, 251) and "snapped" in note and "281" in note
    assert snap_timestep(376, grid)[1] == 251  # a tie (125 either way) goes to the less noisy step
    assert snap_timestep(0, grid)[:2] == (3, 1)


def test_a_snapping_note_is_logged_once_per_process_but_returned_every_time(emerdiff_tiny_model, caplog):
    import logging

    grid = timestep_grid(emerdiff_tiny_model.pipeline, 4)
    with caplog.at_level(logging.INFO, logger="harness.inversion"):
        notes = [snap_timestep(283, grid, "method.test_once")[2] for _ in range(3)]
    assert notes[0] is not None and notes.count(notes[0]) == 3
    assert sum("method.test_once=283" in record.getMessage() for record in caplog.records) == 1


def test_a_thresholding_scheduler_is_refused_in_one_line(emerdiff_tiny_model, image):
    from diffusers import DDPMScheduler

    from harness.errors import ConfigError

    pipeline = emerdiff_tiny_model.pipeline
    original = pipeline.scheduler
    pipeline.scheduler = DDPMScheduler.from_config(original.config, thresholding=True)
    try:
        with pytest.raises(ConfigError, match="thresholding=True"):
            invert(pipeline, image, num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    finally:
        pipeline.scheduler = original
