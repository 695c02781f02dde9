"""PyTorch -> a single self-contained ONNX file, checked with ``onnx.checker``."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch

from mobilekit import safewrite
from mobilekit.errors import ExportError

ONNX_OPSET = 18

# torch's exporter logs one warning per torchvision operator it cannot register; torchvision is not a dependency.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


def export_onnx(module: torch.nn.Module, path: str | Path, input_shape: tuple[int, int, int, int],
                exporter: str = "dynamo", recognise: safewrite.Recognise | None = None) -> Path:
    """Write ``module`` (in eval mode) to ``path`` as one ``.onnx`` file, weights embedded (no ``.onnx.data``).

    Args:
        input_shape: (N, C, H, W) of the example input; the file has this fixed shape.
        exporter: ``"dynamo"`` (torch.export based, PyTorch's default) or ``"torchscript"`` (the legacy
            exporter: about 10x faster, used for the many small models of a profile).
        recognise: a format check that lets an existing ``path`` not listed in its folder's manifest be
            replaced (:func:`mobilekit.safewrite.claim`); by default such a file is refused.
    """
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    example = (torch.zeros(input_shape),)
    with safewrite.atomic_path(path, suffix=".onnx", recognise=recognise) as tmp:  # secure temp, no symlink, atomic rename
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            try:
                if exporter == "dynamo":
                    torch.onnx.export(module, example, str(tmp), dynamo=True, external_data=False, opset_version=ONNX_OPSET,
                                      input_names=["input"], output_names=["output"], verbose=False)
                elif exporter == "torchscript":
                    torch.onnx.export(module, example, str(tmp), dynamo=False, opset_version=17,
                                      input_names=["input"], output_names=["output"])
                else:
                    raise ExportError(f"unknown ONNX exporter {exporter!r}: use 'dynamo' or 'torchscript'")
            except ExportError:
                raise
            except Exception as exc:
                raise ExportError(f"{path}: ONNX export failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
        side_file = tmp.with_name(tmp.name + ".data")
        if side_file.exists():  # never ship a model that needs a side file: fold the weights in
            model = onnx.load(str(tmp), load_external_data=True)
            onnx.save_model(model, str(tmp), save_as_external_data=False)
            side_file.unlink()
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise ExportError(f"{path}: exported ONNX model fails onnx.checker ({str(exc).splitlines()[0][:200]})") from None
    return path
