"""Test doubles for code that talks to phones: an ADB device emulator (:mod:`.adb_emulator`) and a
``benchmark_model``-compatible runner built on the LiteRT Python interpreter (:mod:`.benchmark_model_litert`).

Nothing here is imported by the rest of mobilekit; tests and demos import it explicitly."""
