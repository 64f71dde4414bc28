"""malsori (말소리, "speech sounds"): an offline-first, from-scratch sequence-to-sequence toolkit."""

__version__ = "0.1.0"
