"""A singularity-hpc registry entry (`container.yaml`) for one image.

The fields are those of shpc's own schema (`shpc.main.schemas.containerConfig`,
singularity-hpc 0.1.32): `docker` (the repository), `latest` and `tags` (tag →
digest), `maintainer`, `description`, `url`, `aliases` (command → the command
run in the container) and `env`. shpc picks the backend (Singularity, Podman,
Docker) and the module language at `shpc install`, so the entry names neither.

A digest is the registry's (`RepoDigests`) when the image came from one; an
image only built here has none, and its image ID is written instead (it pins
the exact image, but shpc can pull it only once the image is pushed) with a note.
Text fields come from the image's OCI labels (`org.opencontainers.image.*`, or
a `maintainer` label); a field shpc requires and the image lacks is an error
naming the label to set.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from neurodocker_nd.core import engine
from neurodocker_nd.deliver.commands import Deploy
from neurodocker_nd.errors import NdgenError

OCI = "org.opencontainers.image."
# shpc field → the labels that may hold it, first found wins
LABELS: Mapping[str, tuple[str, ...]] = {
    "maintainer": (OCI + "authors", "maintainer"),
    "description": (OCI + "description",),
    "url": (OCI + "url", OCI + "source"),
}
REQUIRED = ("maintainer", "description")


def digest(deploy: Deploy, repo: str) -> tuple[str, bool]:
    """(the digest of `repo` in the image's RepoDigests, True) or (its image ID, False)."""
    wanted = _qualified(repo)
    for item in deploy.repo_digests:
        name, _, value = item.partition("@")
        if _qualified(name) == wanted:
            return value, True
    return deploy.image_id, False


def _qualified(repo: str) -> str:
    """`repo` as docker resolves it (`x` → `docker.io/library/x`), so `x` never matches `other/x`."""
    return engine.normalize_ref(repo).rsplit(":", 1)[0]


def entry(deploy: Deploy, repo: str, tag: str, overrides: Mapping[str, str]) -> tuple[dict[str, Any], str | None]:
    """The container.yaml data, and a note when the digest is only the local image ID."""
    fields: dict[str, str] = {}
    for field, labels in LABELS.items():
        value = overrides.get(field) or next((deploy.labels[k] for k in labels if deploy.labels.get(k)), "")
        if value:
            fields[field] = value
        elif field in REQUIRED:
            raise NdgenError(f"image {deploy.image}: shpc needs a {field}; set the label {labels[0]} or give --{field}")
    pinned, from_registry = digest(deploy, repo)
    data: dict[str, Any] = {"docker": repo, "url": fields.get("url")}
    data.update(maintainer=fields["maintainer"], description=fields["description"])
    data.update(latest={tag: pinned}, tags={tag: pinned})
    data["aliases"] = {c: c for c in deploy.commands}
    if deploy.env:
        # Inside the container its root is the image's: BASEPATH (the container's path) is empty.
        data["env"] = {k: v.replace("BASEPATH", "") for k, v in deploy.env}
    data = {k: v for k, v in data.items() if v is not None}
    note = None
    if not from_registry:
        note = f"{deploy.image} has no registry digest: tags pin its image ID {pinned}; push it before shpc install"
    return data, note


def text(data: Mapping[str, Any]) -> str:
    return "# written by ndgen modules\n" + yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True)
