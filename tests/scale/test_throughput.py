"""Throughput defaults: float16 on CUDA, SDPA attention, and generation overlapped with writing."""

import threading
import time

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


class _SlowMethod:
    """Generation that takes 0.2 s per batch and records when each batch ran."""

    name = "slow"

    def __init__(self):
        self.spans = []

    def run_batch(self, records, seeds):
        began = time.perf_counter()
        time.sleep(0.2)
        self.spans.append((began, time.perf_counter()))
        return [Sample(image=np.full((64, 64, 3), seed % 256, np.uint8)) for seed in seeds]


def test_store_writes_run_on_another_thread_while_the_next_batch_is_generated(tmp_path, monkeypatch):
    store = SampleStore(tmp_path)
    writes = []
    original_put = store.put

    def slow_put(key, sample, spec=None):
        began = time.perf_counter()
        time.sleep(0.05)
        writes.append((began, threading.current_thread().name))
        return original_put(key, sample, spec)

    monkeypatch.setattr(store, "put", slow_put)
    method = _SlowMethod()
    plan = [PlannedSample(PromptRecord(f"r{i}", "p", i), i, f"{i:064x}", {"i": i}) for i in range(8)]
    assert generate_missing(method, plan, store, batch_size=2) == (8, 0)
    assert {name for _, name in writes} == {"sample-writer"}
    # a write of batch k overlaps the generation of batch k + 1
    overlapped = sum(any(start <= began < end for start, end in method.spans[1:]) for began, _ in writes)
    assert overlapped >= 3
    assert all(store.get(f"{i:064x}").image[0, 0, 0] == i for i in range(8))
    assert all(item.spec is None for item in plan), "specs are not kept once written"
    # a rerun finds all of them and generates nothing
    assert generate_missing(method, plan, store, batch_size=2) == (0, 8)
