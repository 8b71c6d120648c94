"""Kept for the documented 0.1 API: these names now live in `neurodocker_nd.render.recipe`."""

from neurodocker_nd.render.recipe import find_recipe, load_recipe

__all__ = ["find_recipe", "load_recipe"]
