"""`ndgen upstream export`: which export a --target (and an upstream checkout) asks for.

neurodocker: proven template patch series.  neurocontainers: recipe files, or,
with a neurocontainers checkout, patch series for `upstream pr --target neurocontainers`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import attrs

from neurodocker_nd.core import paths
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.upstream import neurocontainers
from neurodocker_nd.upstream.gitcmd import resolve_identity
from neurodocker_nd.upstream.neurocontainers import NcRecipe
from neurodocker_nd.upstream.neurodocker import export
from neurodocker_nd.upstream.series import Series


@attrs.frozen
class Exported:
    kind: Literal["series", "recipes"]
    series: tuple[Series, ...] = ()
    recipes: tuple[NcRecipe, ...] = ()


def export_target(
    target: str,
    registry: Path | None,
    upstream: Path | None,
    out: Path,
    author: str | None,
    build_evidence: bool = False,
    network: str | None = None,
) -> Exported:
    """Write `target`'s export under `out`; the flags that do not apply to it are errors, never ignored.

    `registry`: None for ndgen's own.  `author` is resolved only where commits are
    made (recipe files need no identity).
    """
    if network is not None and not build_evidence:
        raise NdgenError("--network applies to --build-evidence only")
    if build_evidence and target == "neurocontainers":
        raise NdgenError("--build-evidence applies to --target neurodocker only")
    registry_dir = registry or paths.registry_dir()
    if target == "neurocontainers":
        if upstream is None:
            return Exported("recipes", recipes=tuple(neurocontainers.export(registry_dir, out)))
        made = neurocontainers.export_series(registry_dir, upstream, out, resolve_identity(author))
        return Exported("series", series=tuple(made))
    identity = resolve_identity(author)
    return Exported(
        "series", series=tuple(export(registry_dir, upstream, out, identity, build_evidence, network or "default"))
    )
