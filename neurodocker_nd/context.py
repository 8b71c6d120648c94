"""Kept for the documented 0.1 API: these names now live in `neurodocker_nd.render.context`."""

from neurodocker_nd.render.context import write_context

__all__ = ["write_context"]
