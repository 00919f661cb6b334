"""JSON-ready forms of a classifier's Result: its top-5 classes with their probabilities."""

from __future__ import annotations

from typing import Any, Sequence

from runtime.records.result import Result


def top5_entries(result: Result, category_ids: Sequence[int] | None = None, decimals: int = 5) -> list[dict[str, Any]]:
    """``[{"category_id", "category_name", "score"}, ...]`` for the top-5 classes, best first (``category_ids``
    maps model classes to dataset ids, identity when None); [] for a Result without ``probs``."""
    if result.probs is None:
        return []
    return [{"category_id": int(category_ids[c]) if category_ids is not None else int(c),
             "category_name": result.names[c], "score": round(float(result.probs[c]), decimals)} for c in result.top5]


def top5_text(result: Result) -> str:
    """``cat 0.61, dog 0.20, ...``: the top-5 classes and probabilities, best first."""
    return ", ".join(f"{result.names[c]} {float(result.probs[c]):.2f}" for c in result.top5)
