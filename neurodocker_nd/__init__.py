"""ndgen: neuroimaging container toolkit built on neurodocker's reproenv.

Importing this package has no side effects: no registry is loaded, no Docker
client is created. One package per pipeline — render, build, minify, upstream,
maintain — over the layers they share (core, registry), with cli as the edge;
imports go one way (docs/ARCHITECTURE.md, enforced by tests/core/test_layers.py).
"""

__version__ = "0.1.0"
