"""Timing a model file in this process on this CPU (onnxruntime or the LiteRT interpreter)."""

from __future__ import annotations

import time

import numpy as np

from mobilekit.export.runtimes import OnnxModel, TfliteModel
from mobilekit.profile.measurement import Measurement


def time_model(model: OnnxModel | TfliteModel, runs: int = 50, warmup: int = 5, seed: int = 0) -> Measurement:
    """Median / spread of ``runs`` single inferences (ms) after ``warmup`` untimed ones, on one fixed input."""
    started = time.perf_counter()
    sample = np.random.default_rng(seed).standard_normal(model.input_shape[1:]).astype(np.float32)
    if isinstance(model, TfliteModel):
        model.set_input(sample)
        call = model.invoke
    else:
        feed = {model.input.name: sample[None]}
        session = model.session

        def call() -> None:
            session.run(None, feed)

    for _ in range(warmup):
        call()
    samples_ms = []
    for _ in range(runs):
        begin = time.perf_counter()
        call()
        samples_ms.append((time.perf_counter() - begin) * 1e3)
    return Measurement.from_samples(samples_ms, wall_s=time.perf_counter() - started)
