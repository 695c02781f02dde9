"""TFLite model metadata (the TFLite Support schema, ``metadata_schema.fbs``, file identifier ``M001``) with the
class names as an associated label file, so standard TFLite tooling (the metadata extractor, Android Studio's
model viewer, the Task Library's image classifier) shows them.

The ``tflite-support`` package that normally writes this (``MetadataPopulator``) is not installed here (its last
release, 0.4.4 of 2023, predates this TensorFlow), so the few tables needed are written directly with the
``flatbuffers`` library, in the schema's field order:

- ``ModelMetadata`` (name, description, version, subgraph_metadata, ..., min_parser_version "1.0.0");
- one ``SubGraphMetadata`` whose input ``TensorMetadata`` says RGB image (``ImageProperties``) with a
  ``NormalizationOptions`` process unit (mean / std on the 0-255 scale: 255 x model.json's), and whose output
  ``TensorMetadata`` has the ``AssociatedFile`` ``labels.txt`` of type ``TENSOR_AXIS_LABELS`` (one name a line,
  output index order).

As ``MetadataPopulator`` does, the metadata goes into a model buffer named by a ``TFLITE_METADATA`` entry of
the model's ``metadata`` list, and ``labels.txt`` is packed into a zip archive appended to the flatbuffer (the
interpreter ignores the trailing bytes; ``zipfile`` and the extractor read them).
"""

from __future__ import annotations

import io
import zipfile
from typing import Sequence

import numpy as np

from mobilekit.errors import ExportError

METADATA_NAME = "TFLITE_METADATA"
LABELS_FILE = "labels.txt"
MIN_PARSER_VERSION = "1.0.0"
TENSOR_AXIS_LABELS = 2          # AssociatedFileType
IMAGE_PROPERTIES = 2            # ContentProperties union: FeatureProperties 1, ImageProperties 2, BoundingBox 3
NORMALIZATION_OPTIONS = 1       # ProcessUnitOptions union
RGB = 1                         # ColorSpaceType


def labels_text(class_names: Sequence[str]) -> str:
    """One class name a line, in output-index order (newlines inside a name become spaces)."""
    return "".join(" ".join(str(name).split()) + "\n" for name in class_names)


def metadata_flatbuffer(class_names: Sequence[str], mean: Sequence[float], std: Sequence[float],
                        description: str, version: str) -> bytes:
    """The ``ModelMetadata`` flatbuffer (identifier ``M001``) of an image classifier with a label file.
    ``mean`` / ``std``: per-channel normalisation on the [0, 1] scale (stored x 255, the schema's pixel scale)."""
    import flatbuffers

    b = flatbuffers.Builder(1024)

    def table(fields: list[tuple[str, int, object]]) -> int:
        # fields: (kind, slot, value) with kind "offset" | "byte"; slot = field index in the schema
        b.StartObject(max(slot for _, slot, _ in fields) + 1)
        for kind, slot, value in fields:
            if kind == "offset":
                b.PrependUOffsetTRelativeSlot(slot, value, 0)
            else:
                b.PrependInt8Slot(slot, value, 0)
        return b.EndObject()

    def vector(offsets: list[int]) -> int:
        b.StartVector(4, len(offsets), 4)
        for offset in reversed(offsets):
            b.PrependUOffsetTRelative(offset)
        return b.EndVector()

    def floats(values: Sequence[float]) -> int:
        return b.CreateNumpyVector(np.asarray(values, dtype=np.float32))

    # input: RGB image, normalisation on the 0-255 scale
    norm = table([("offset", 0, floats([255.0 * m for m in mean])), ("offset", 1, floats([255.0 * s for s in std]))])
    unit = table([("byte", 0, NORMALIZATION_OPTIONS), ("offset", 1, norm)])
    image = table([("byte", 0, RGB)])
    content = table([("byte", 0, IMAGE_PROPERTIES), ("offset", 1, image)])
    in_name, in_text = b.CreateString("image"), b.CreateString(
        "RGB image scaled to [0, 1], normalised per channel with model.json's mean and std (here on the 0-255 scale)")
    units = vector([unit])
    input_meta = table([("offset", 0, in_name), ("offset", 1, in_text), ("offset", 3, content), ("offset", 4, units)])
    # output: logits with the label file
    file_name, file_text = b.CreateString(LABELS_FILE), b.CreateString("class names, one a line, output-index order")
    label_file = table([("offset", 0, file_name), ("offset", 1, file_text), ("byte", 2, TENSOR_AXIS_LABELS)])
    out_name, out_text = b.CreateString("logits"), b.CreateString(f"{len(class_names)} class logits (argmax = class)")
    files = vector([label_file])
    output_meta = table([("offset", 0, out_name), ("offset", 1, out_text), ("offset", 6, files)])
    inputs, outputs = vector([input_meta]), vector([output_meta])
    subgraph = table([("offset", 2, inputs), ("offset", 3, outputs)])
    name, text, ver = b.CreateString("mobilekit image classifier"), b.CreateString(description), b.CreateString(version)
    subgraphs, parser = vector([subgraph]), b.CreateString(MIN_PARSER_VERSION)
    root = table([("offset", 0, name), ("offset", 1, text), ("offset", 2, ver), ("offset", 3, subgraphs),
                  ("offset", 7, parser)])
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())


def add_label_metadata(flatbuffer: bytes, class_names: Sequence[str], mean: Sequence[float], std: Sequence[float],
                       description: str, version: str) -> bytes:
    """``flatbuffer`` (a .tflite model) with the metadata of :func:`metadata_flatbuffer` in a new buffer named by
    a ``TFLITE_METADATA`` entry (replacing an earlier one), and ``labels.txt`` zipped after it."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    if flatbuffer[4:8] != b"TFL3":
        raise ExportError("not a TFLite flatbuffer (missing the 'TFL3' identifier)")
    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    entries = [m for m in (model.metadata or []) if (m.name.decode() if isinstance(m.name, bytes) else m.name)
               != METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata_flatbuffer(class_names, mean, std, description, version), dtype=np.uint8)
    model.buffers = list(model.buffers or []) + [buffer]
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = entries + [entry]
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    packed = io.BytesIO(bytes(builder.Output()))
    with zipfile.ZipFile(packed, "a") as archive:
        archive.writestr(LABELS_FILE, labels_text(class_names))
    return packed.getvalue()
