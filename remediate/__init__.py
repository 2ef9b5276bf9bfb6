"""remediate: find why nginx answers 502 Bad Gateway, and fix it safely over SSH."""

__all__ = ["__version__"]

__version__ = "0.1.0"
