"""Making and measuring models offline: data, architectures, training, conversion, evaluation.

Importing it sets TensorFlow's quiet, exactly repeatable defaults before Keras loads (oneDNN
reorders float sums).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
