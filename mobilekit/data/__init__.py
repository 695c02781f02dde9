"""Training data for the searchers (:mod:`.datasets`): ``digits`` (bundled), ``fashion-mnist`` (Debian),
``idx:DIR`` (MNIST format, :mod:`.idx`), ``cifar10:DIR``, ``folder:DIR``; the batched augmentation operations of
AutoAugment-style policies on [0, 1] pixels (:mod:`.augment_ops`)."""

from mobilekit.data.datasets import DEFAULT_DATA, DataSplits, load_dataset

__all__ = ["DEFAULT_DATA", "DataSplits", "load_dataset"]
