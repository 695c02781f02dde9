"""Stage 3: measuring a device. Device descriptors, transports (host, ADB), benchmark runners and their output
parsers, and the profiler that writes latency tables (:mod:`mobilekit.latency_table`)."""
