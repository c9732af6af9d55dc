"""`missingness`, where docs/inspect.md shows it; computed in `gperceiver.store.frequencies`."""

from gperceiver.store.frequencies import missingness

__all__ = ["missingness"]
