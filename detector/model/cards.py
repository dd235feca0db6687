"""What a model card says about the model, in the words the commands use: what it detects
(its family) and whether it reached the target it was trained for.

A detector following a name swaps to whatever becomes live under it, so ``models push`` and
``promote`` look at the card first: a model that does not reach its target, or one that
detects something else than the name serves now, needs ``--force``.
"""

from __future__ import annotations

from typing import Any

#: The family of the shipped models and of any model without a pattern: the trend rule.
TRENDS = "trends"


def family(card: dict[str, Any]) -> str:
    """What the model detects: its pattern's name, or ``TRENDS``."""
    pattern = card.get("pattern")
    return pattern if isinstance(pattern, str) and pattern else TRENDS


def detects(card: dict[str, Any]) -> str:
    """``family`` as words: "trends" or "the pattern 'dip'"."""
    kind = family(card)
    return kind if kind == TRENDS else f"the pattern {kind!r}"


def missed_target(card: dict[str, Any]) -> str:
    """How the model misses the target its card records ("" when it reaches it, or when the
    card records none, as the shipped models' do not)."""
    target = card.get("target")
    if not isinstance(target, dict) or target.get("reached") is not False:
        return ""
    held = card.get("held_out") if isinstance(card.get("held_out"), dict) else {}
    got = ", ".join(f"{key} {held[key]:{fmt}}" for key, fmt in (("accuracy", ".2%"), ("f1", ".4f"))
                    if isinstance(held.get(key), int | float))
    want = ", ".join(f"{key} {target[key]}" for key in ("accuracy", "f1") if key in target)
    return f"held out: {got or 'no figures'}; target: {want}"
