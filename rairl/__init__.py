"""rairl: R-AIRL, process-level reasoning rewards learned from expert demonstrations."""

__version__ = "0.1.0"
