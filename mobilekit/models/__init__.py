"""Stage 2: builders. PyTorch (:mod:`.torch_builder`) and Keras (:mod:`.keras_builder`, imported lazily because
TensorFlow is slow to import) from the same decoded architecture."""

from mobilekit.models.torch_builder import MBConv, MobileNet, build_torch_model, randomize_batchnorm

__all__ = ["MBConv", "MobileNet", "build_torch_model", "randomize_batchnorm"]
