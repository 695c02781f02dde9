"""Check an exported file against the PyTorch model it came from, on the same sample inputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mobilekit.export.runtimes import OnnxModel, TfliteModel

#: Float files agree with PyTorch to within FLOAT_TOLERANCE x max(1, largest |logit| of the reference).
#: The bound is relative to the logit scale because float32 rounding is: a runtime that sums the same products in
#: another order (fused kernels, other tilings) differs by a few ulp of the values it accumulates, and one ulp of a
#: float32 near 16 is 2e-6, so logits of magnitude ~10 (a DiffAutoML network after one epoch on digits) reach
#: 7e-4 through dozens of layers with no fault in the export, while logits near 1 stay within 1e-4 as before.
#: A wrong export (a missing layer, swapped weights, a wrong layout) differs by the order of the logits themselves.
FLOAT_TOLERANCE = 1e-4


def float_limit(reference: np.ndarray) -> float:
    """The largest max abs logit difference a float file may have against PyTorch's ``reference`` logits:
    ``FLOAT_TOLERANCE * max(1, max |reference|)`` (same units as the logits)."""
    scale = float(np.abs(reference).max()) if reference.size else 0.0
    return FLOAT_TOLERANCE * max(1.0, scale if np.isfinite(scale) else 1.0)


@dataclass(frozen=True)
class ParityResult:
    """Agreement of an exported file with PyTorch. ``max_abs_diff`` is over all logits of all samples."""

    format: str
    samples: int
    max_abs_diff: float
    top1_agreement: float
    passed: bool
    limit: float = FLOAT_TOLERANCE

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        if self.format == "tflite-int8":
            return (f"{self.format}: top-1 agreement with PyTorch {self.top1_agreement:.1%} on {self.samples} samples "
                    f"(max abs logit diff {self.max_abs_diff:.3g}) [{verdict}]")
        return (f"{self.format}: max abs diff vs PyTorch {self.max_abs_diff:.2e} (limit {self.limit:.1e} = 1e-4 x max(1, |max logit|)) on "
                f"{self.samples} samples, top-1 agreement {self.top1_agreement:.0%} [{verdict}]")


def torch_outputs(model: torch.nn.Module, samples_nchw: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(samples_nchw.astype(np.float32))).numpy()


def check_parity(fmt: str, exported: OnnxModel | TfliteModel, reference: np.ndarray, samples_nchw: np.ndarray,
                 min_int8_agreement: float = 0.0) -> ParityResult:
    """Run ``exported`` on ``samples_nchw`` (N, C, H, W) and compare with ``reference`` (N, classes) logits.

    float formats pass when the max abs difference is <= :func:`float_limit` (1e-4 relative to the logit scale,
    at least 1e-4 absolute); int8 passes when its top-1 agreement is at least
    ``min_int8_agreement`` (reported either way).
    """
    inputs = samples_nchw if isinstance(exported, OnnxModel) else samples_nchw.transpose(0, 2, 3, 1)
    outputs = exported.run(np.ascontiguousarray(inputs))
    diff = float(np.abs(outputs - reference).max())
    agreement = float((outputs.argmax(1) == reference.argmax(1)).mean())
    limit = float_limit(reference)
    passed = agreement >= min_int8_agreement if fmt == "tflite-int8" else diff <= limit and np.isfinite(diff)
    return ParityResult(fmt, len(samples_nchw), diff, agreement, bool(passed), limit)
