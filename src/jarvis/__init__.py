"""jarvis: a reproducible, workflow-managed reproduction of JARVIS (arXiv 2512.15885)."""

__version__ = "0.1.0"
