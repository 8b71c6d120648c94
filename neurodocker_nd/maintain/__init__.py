"""Registry maintenance: validate's rules (lint), check-urls, and the render matrix.

Reads the registry and renders it; writes only where the maintainer points it.
"""
