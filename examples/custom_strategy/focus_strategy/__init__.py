"""Example hf_datamix strategy plugin (see README.md)."""

from .focus import FocusConfig, FocusStrategy


__all__ = ["FocusConfig", "FocusStrategy"]
