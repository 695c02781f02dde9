"""mobilekit: hardware-aware mobile model design.

The pipeline, one sub-package per stage that data flows through::

    space -> models / export -> profile -> latency -> search

``space`` describes what can be built, ``models`` builds it (PyTorch, Keras), ``export`` writes deployable
ONNX / TFLite files, ``profile`` measures layers on a device, ``latency`` turns measurements into tables,
predictors and a differentiable runtime loss, and ``search`` finds an architecture under a latency budget.
"""

__version__ = "0.1.0"
