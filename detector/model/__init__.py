"""The model: what it sees (``features``), the batched serving step (``serving``) over its two
runtimes (``litert``, ``keras_step``), the conversion between them, and the shipped models
(``shipped/``, with their cards and training curves)."""
