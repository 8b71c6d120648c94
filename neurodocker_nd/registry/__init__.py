"""The template registry: reads registry/ and schemas/meta.schema.json, never writes.

`Registry` and `Entry` are lazy, validated and immutable; nothing here is global.
"""

from neurodocker_nd.registry.entries import Entry, Registry

__all__ = ["Entry", "Registry"]
