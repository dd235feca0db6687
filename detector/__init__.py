"""The streaming trend detector: Kafka in, a Keras LSTM per stream, flags and alerts out.

Kept free of imports (the producer and the light commands must not pay for TensorFlow), but for
TensorFlow's defaults, set before anything can import it: quiet, and exactly repeatable (oneDNN
reorders float sums, so results would differ in their last bits between batch sizes).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
