"""Throughput defaults: float16 on CUDA, SDPA attention, and generation overlapped with writing."""

import threading

import numpy as np
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from harness.data.prompts import PromptRecord
from harness.models.loader import resolve_device
from harness.run import PlannedSample, generate_missing
from harness.store.samples import Sample, SampleStore


def test_cuda_defaults_to_float16_and_the_cpu_to_float32(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", "auto") == (torch.device("cuda"), torch.float16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", "auto") == (torch.device("cpu"), torch.float32)


def test_loaded_pipelines_use_scaled_dot_product_attention(compose):
    from harness.models.loader import load_model

    model = load_model(compose(["model=tiny_random"]).model)
    processors = model.pipeline.unet.attn_processors
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors.values())


class _RecordingMethod:
    """Generation that records the start of each batch as an event the test can wait for."""

    name = "recording"

    def __init__(self, batches: int):
        self.started = [threading.Event() for _ in range(batches)]
        self.calls = 0

    def run_batch(self, records, seeds):
        self.started[min(self.calls, len(self.started) - 1)].set()
        self.calls += 1
        return [Sample(image=np.full((64, 64, 3), seed % 256, np.uint8)) for seed in seeds]


def test_store_writes_run_on_another_thread_while_the_next_batch_is_generated(tmp_path, monkeypatch):
    """Deterministic overlap (no timing): the write of batch k does not finish until the generation
    of batch k + 1 has started. On a writer thread that happens at once; if writes ran in the
    generating thread, batch k + 1 could not start and the wait would time out (the test fails)."""
    store = SampleStore(tmp_path)
    batches, batch_size = 4, 2
    method = _RecordingMethod(batches)
    writes = []
    original_put = store.put

    def put_after_next_batch_started(key, sample, spec=None):
        batch = int(key, 16) // batch_size
        overlapped = method.started[batch + 1].wait(timeout=30) if batch + 1 < batches else None
        writes.append((batch, overlapped, threading.current_thread().name))
        return original_put(key, sample, spec)

    monkeypatch.setattr(store, "put", put_after_next_batch_started)
    plan = [PlannedSample(PromptRecord(f"r{i}", "p", i), i, f"{i:064x}", {"i": i}) for i in range(8)]
    assert generate_missing(method, plan, store, batch_size=batch_size) == (8, 0)
    assert {name for _, _, name in writes} == {"sample-writer"}
    # every write of batches 0-2 waited for, and saw, the next batch's generation start
    assert [overlapped for batch, overlapped, _ in writes if batch + 1 < batches] == [True] * 6
    assert all(store.get(f"{i:064x}").image[0, 0, 0] == i for i in range(8))
    assert all(item.spec is None for item in plan), "specs are not kept once written"
    # a rerun finds all of them and generates nothing
    assert generate_missing(method, plan, store, batch_size=2) == (0, 8)
