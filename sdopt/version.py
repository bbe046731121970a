"""The version of sdopt, at the bottom of the package: every layer records it in what it
writes (results, manifests, cache keys) without importing the public facade."""

__version__ = "0.1.0"
