"""Validation at the boundary, once per format: every file a command reads and every option it takes is checked
here, with typed, range-checked fields (pydantic models for the JSON/TOML formats), before any stage uses it.

* :mod:`.paths`: one helper for input files/folders (exists, right kind, readable) and outputs (not an existing
  file where a folder belongs, not under a file, writable).
* :mod:`.options`: argparse ``type=`` converters (``positive_int``, ``finite_float``...) and a parser whose
  errors are one line.
* :mod:`.table`, :mod:`.device`, :mod:`.predictor`, :mod:`.cell`: the latency table, device descriptor,
  predictor and compare cell files; :mod:`.run_files`: a run folder's ``bundle.json`` and ``summary.json``.

Everything raises a :class:`~mobilekit.errors.MobilekitError` subclass whose message is one line naming the file
or option, the field and the fix. This package imports nothing from the pipeline stages.
"""

from mobilekit.validation.paths import check_input_dir, check_input_file, check_output_dir, check_output_file

__all__ = ["check_input_dir", "check_input_file", "check_output_dir", "check_output_file"]
