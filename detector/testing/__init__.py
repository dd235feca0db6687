"""Support for the tests, the benchmarks and the demo, never imported by a production detector:
the bundled local broker, and detectors as real processes with the audit every fault scenario
ends with."""
