"""Counting the images a search really consumes, to check a budget rule (:mod:`.budget`) against a run.

:class:`ImageCounter` is a global forward pre-hook on :class:`~mobilekit.models.torch_builder.Stem` -- the first
module of every network built from the one skeleton (derived networks and every supernet) -- so each image is seen
once per forward pass, whatever the searcher does with it. A pass with autograd on is the forward half of a gradient
step (weights or encodings); with autograd off it is forward-only (candidate scoring, BN recalibration), counted
only while the method's own ``search`` runs (the deliverable's BN recalibration and final evaluation are left out,
as in :func:`.budget.forward_only_images`). It changes nothing in the method: it wraps the module's ``search``
attribute while counting.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any, Iterator

import torch

from mobilekit.models.torch_builder import Stem
from mobilekit.search.training import MONITORING


class ImageCounter:
    """``gradient``: images entering a network with autograd on (anywhere while counting); ``forward_only``: with
    autograd off, inside the method's ``search``."""

    def __init__(self) -> None:
        self.gradient = 0
        self.forward_only = 0
        self._in_search = False

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        if isinstance(module, Stem) and args[0].device.type != "meta":   # shape-only passes read no image
            if torch.is_grad_enabled():
                self.gradient += int(args[0].shape[0])
            elif self._in_search and not MONITORING.get():   # per-epoch monitoring is not the method's
                self.forward_only += int(args[0].shape[0])

    @contextlib.contextmanager
    def counting(self, method_module: ModuleType) -> Iterator["ImageCounter"]:
        """Count while the block runs; ``method_module`` is the searcher's module (``get_method(name).load()``)."""
        real = method_module.search

        def search(ctx: Any) -> Any:
            self._in_search = True
            try:
                return real(ctx)
            finally:
                self._in_search = False

        handle = torch.nn.modules.module.register_module_forward_pre_hook(self)
        method_module.search = search
        try:
            yield self
        finally:
            method_module.search = real
            handle.remove()
