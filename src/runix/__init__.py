"""Runix: a self-hostable deployment platform."""

__version__ = "0.1.0"
