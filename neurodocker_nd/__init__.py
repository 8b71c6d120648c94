"""ndgen: neuroimaging container toolkit built on neurodocker's reproenv.

Importing this package has no side effects: no registry is loaded, no Docker
client is created. Each step lives in its own module (see ARCHITECTURE.md).
"""

__version__ = "0.1.0"
