"""Arkor: distributed object storage on trio."""

__version__ = "0.1.0"
