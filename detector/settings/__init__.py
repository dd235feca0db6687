"""Settings: frozen dataclasses, one module per thing they configure, and ``fields``, the one
place that maps CLI flags and ``DETECTOR_*`` / ``PRODUCER_*`` variables onto them."""
