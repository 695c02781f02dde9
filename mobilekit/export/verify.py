"""Check an exported file against the PyTorch model it came from, on the same sample inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mobilekit.export.runtimes import OnnxModel, TfliteModel

FLOAT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ParityResult:
    """Agreement of an exported file with PyTorch. ``max_abs_diff`` is over all logits of all samples."""

    format: str
    samples: int
    max_abs_diff: float
    top1_agreement: float
    passed: bool

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        if self.format == "tflite-int8":
            return (f"{self.format}: top-1 agreement with PyTorch {self.top1_agreement:.1%} on {self.samples} samples "
                    f"(max abs logit diff {self.max_abs_diff:.3g}) [{verdict}]")
        return (f"{self.format}: max abs diff vs PyTorch {self.max_abs_diff:.2e} (limit {FLOAT_TOLERANCE:.0e}) on "
                f"{self.samples} samples, top-1 agreement {self.top1_agreement:.0%} [{verdict}]")


def torch_outputs(model: torch.nn.Module, samples_nchw: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(samples_nchw.astype(np.float32))).numpy()


def check_parity(fmt: str, exported: OnnxModel | TfliteModel, reference: np.ndarray, samples_nchw: np.ndarray,
                 min_int8_agreement: float = 0.0) -> ParityResult:
    """Run ``exported`` on ``samples_nchw`` (N, C, H, W) and compare with ``reference`` (N, classes) logits.

    float formats pass when the max abs difference is <= 1e-4; int8 passes when its top-1 agreement is at least
    ``min_int8_agreement`` (reported either way).
    """
    inputs = samples_nchw if isinstance(exported, OnnxModel) else samples_nchw.transpose(0, 2, 3, 1)
    outputs = exported.run(np.ascontiguousarray(inputs))
    diff = float(np.abs(outputs - reference).max())
    agreement = float((outputs.argmax(1) == reference.argmax(1)).mean())
    passed = agreement >= min_int8_agreement if fmt == "tflite-int8" else diff <= FLOAT_TOLERANCE and np.isfinite(diff)
    return ParityResult(fmt, len(samples_nchw), diff, agreement, bool(passed))
