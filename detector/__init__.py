"""The streaming trend detector: Kafka in, a Keras LSTM per stream, flags and alerts out.

Kept free of imports: the producer and the light commands must not pay for TensorFlow.
"""
