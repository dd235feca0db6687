"""The front: ``python -m detector <command>`` (``main``), the commands by what they are for,
and what people run by hand (the demo, the tail)."""
