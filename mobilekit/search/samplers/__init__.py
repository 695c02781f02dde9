"""Architecture samplers behind an ask/tell interface (``ask(n)`` -> index lists, ``tell(archs, metrics)``), so
any searcher can use them: :mod:`.tnas` (a transformer VAE learning where the good architectures are)."""
