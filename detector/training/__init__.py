"""Making and measuring models offline: data, architectures, training (the shipped models' and
your own pattern's), conversion to LiteRT, evaluation, plots, the seed's experiment."""
