"""The two-control-plane fixture (``planes_support``) for this directory's tests."""

from integration.controlplane.planes_support import planes

__all__ = ["planes"]
