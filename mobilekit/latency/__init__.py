"""Stage 4: latency models. Table lookup (:mod:`.lookup`), the per-layer regression with its whole-network
correction (:mod:`.regression`, over the layer features of :mod:`.features`), validation of both against whole
networks measured on the device (:mod:`.validate`), and their evaluation on published phone tables
(:mod:`.published_eval`), and the differentiable latency models the searchers consume (:mod:`.differentiable`).

Heavy libraries (scikit-learn, scipy, matplotlib, tqdm) are imported only where a model is fitted or a plot drawn.
"""

from mobilekit.latency.features import (
    COST_TERMS, FEATURE_NAMES, LayerShape, cost_matrix, feature_matrix, layer_feature_dict, layer_features,
)
from mobilekit.latency.lookup import LookupPredictor
from mobilekit.latency.metrics import error_metrics
from mobilekit.latency.regression import MODEL_KINDS, LayerLatencyRegressor, fit_network_correction
from mobilekit.latency.validate import ValidationReport, sample_spread, validate_predictor

# The differentiable latency models (mobilekit.latency.differentiable) import torch: import it from its module.

__all__ = [
    "COST_TERMS", "FEATURE_NAMES", "LayerLatencyRegressor", "LayerShape", "LookupPredictor", "MODEL_KINDS",
    "ValidationReport", "cost_matrix", "error_metrics", "feature_matrix", "fit_network_correction",
    "layer_feature_dict", "layer_features", "sample_spread", "validate_predictor",
]
