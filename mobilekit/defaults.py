"""Defaults shared by several commands (a light module: the CLI imports it before any heavy library)."""

#: The data set ``search`` and ``compare`` use without ``--data``: scikit-learn's bundled digits (offline, seconds).
DEFAULT_DATA = "digits"
