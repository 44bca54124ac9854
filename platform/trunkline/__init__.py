"""Trunkline: a multitenant Models-as-a-Service platform in front of shared vLLM pools."""

__version__ = "0.1.0"
