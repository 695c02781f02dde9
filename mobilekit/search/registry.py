"""The method registry: a method name -> the module that implements it. Nothing else in mobilekit names a method.

A method module defines (see docs/adding-a-searcher.md):

``Options``        a dataclass of the method's own settings, declared with :func:`~mobilekit.search.options.option`
                   (recipe section ``[search.<name>]``, command-line flags, validation all derive from it);
``LATENCY_MODEL``  the latency model it consumes, a key of
                   :data:`mobilekit.latency.differentiable.LATENCY_MODELS` ("lookup", "superkernel", "expected");
``SUMMARY``        one line for ``mobilekit search --help``;
``search(ctx)``    :class:`~mobilekit.search.training.SearchContext` -> :class:`~mobilekit.search.outcome.SearchOutcome`.

and optionally ``FINAL_EPOCHS``: the method's default for ``--final-epochs`` (e.g. 0 for an end-to-end method
whose search network is the deliverable); without it the default is ``--epochs``; and optionally
``common_defaults(given)``: the method's own defaults for common options the user did not give (``given``: the
common options they did give, e.g. to scale a learning rate with ``batch_size``); and optionally
``search_network(space, latency_model)``: the network its search step trains when that holds more activations
than one path (multipath: every candidate path), built for the memory estimate (:mod:`mobilekit.search.memory`)
on PyTorch's ``meta`` device; without it a step is estimated as the widest single path.

Modules are imported when a search runs or its flags are parsed, so ``mobilekit --version`` stays light.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Mapping

from mobilekit.errors import ConfigError


@dataclass(frozen=True)
class Method:
    """One registered searcher: its name and the dotted path of its module."""

    name: str
    module: str

    def load(self) -> ModuleType:
        module = importlib.import_module(self.module)
        for attr in ("Options", "LATENCY_MODEL", "SUMMARY", "search"):
            if not hasattr(module, attr):
                raise ConfigError(f"method {self.name!r}: module {self.module} lacks {attr} (see registry docs)")
        return module

    @property
    def options(self) -> type:
        return self.load().Options

    @property
    def latency_model(self) -> str:
        return self.load().LATENCY_MODEL

    @property
    def summary(self) -> str:
        return self.load().SUMMARY

    @property
    def searcher(self) -> Callable:
        return self.load().search

    @property
    def final_epochs_default(self) -> int | None:
        """The method's own default for ``final_epochs`` (None: the common default, ``epochs``)."""
        return getattr(self.load(), "FINAL_EPOCHS", None)

    @property
    def search_network(self) -> Callable | None:
        """The method's optional ``search_network(space, latency_model)`` builder (None: one path per step)."""
        return getattr(self.load(), "search_network", None)

    def common_defaults(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The method's own defaults for common options the user did not give (``given``: those they did), from
        its optional ``common_defaults(given)`` (e.g. DiffAutoML's paper optimiser and batch-scaled lr)."""
        own = getattr(self.load(), "common_defaults", None)
        return {} if own is None else dict(own(given))


METHODS: dict[str, Method] = {}


def register(name: str, module: str) -> Method:
    """Register (or replace) method ``name`` implemented by ``module`` (a dotted import path)."""
    METHODS[name] = Method(name, module)
    return METHODS[name]


def unregister(name: str) -> None:
    METHODS.pop(name, None)


def get_method(name: str, where: str = "settings") -> Method:
    """The registered method ``name``; :class:`ConfigError` naming the known ones otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"{where}: method {name!r} is unknown; use one of {', '.join(METHODS)}") from None


# ---- the built-in methods: one line each -------------------------------------------------------------------------
register("single-path", "mobilekit.search.methods.single_path")
register("multipath", "mobilekit.search.methods.multipath")
register("random", "mobilekit.search.methods.random_search")
register("autohas", "mobilekit.search.methods.autohas")
register("random-has", "mobilekit.search.methods.joint_random")
register("tpe", "mobilekit.search.methods.joint_tpe")
register("spos", "mobilekit.search.methods.spos")
register("tnas-os", "mobilekit.search.methods.tnas_os")
register("diffautoml", "mobilekit.search.methods.diffautoml")
