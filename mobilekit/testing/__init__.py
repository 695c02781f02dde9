"""Test doubles for code that talks to phones: an ADB device emulator (:mod:`.adb_emulator`) and a
``benchmark_model``-compatible runner built on the LiteRT Python interpreter (:mod:`.benchmark_model_litert`), and a
tiny image-folder data set for smoke runs (:mod:`.tiny_images`).

Nothing here is imported by the rest of mobilekit; tests and demos import it explicitly."""
