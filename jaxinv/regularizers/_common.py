"""Shared checks for regularizer parameters."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def require_keys(params: Mapping[str, Any], keys: Iterable[str], who: str) -> None:
    """Raise ``ValueError`` naming the missing keys of a params dict."""
    if not isinstance(params, Mapping):
        raise ValueError(f"{who}: params must be a dict, got {type(params).__name__}")
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"{who}: params is missing {missing}; it has {sorted(params)}")
