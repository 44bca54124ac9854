"""The data plane: an OpenAI-compatible gateway that serves from a config snapshot.

Nothing in this package imports the ORM, the portal or the control plane.
"""
