"""`ndgen check-urls [NAME…] [--recipe PATH] [--json] [--fetch] [--write]`."""

from __future__ import annotations

import json

import click

from neurodocker_nd.errors import NdgenError


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"


@click.command("check-urls")
@click.argument("names", nargs=-1)
@click.option(
    "--recipe", "recipe", type=click.Path(), help="Check this recipe's files: (directory or build.yaml) instead."
)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of results.")
@click.option(
    "--fetch",
    "do_fetch",
    is_flag=True,
    help="Download each file and compute its sha256 (compared with the recorded one).",
)
@click.option(
    "--write",
    "do_write",
    is_flag=True,
    help="Record fetched digests into meta.yaml / the recipe (implies --fetch; needs the 'upstream' extra).",
)
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    help="Seconds to wait for each answer from a server (NDGEN_DOWNLOAD_DEADLINE bounds the whole request).",
)
def check_urls_cmd(
    names: tuple[str, ...], recipe: str | None, as_json: bool, do_fetch: bool, do_write: bool, timeout: float
) -> None:
    """Check the download URLs of the registry (all entries, or NAME…) or of a recipe:
    HTTP status, redirects and size; --fetch also verifies sha256.

    Exit status 2 (one error line after the report) when any URL fails or a digest
    differs; URLs waived as `dropbox` (known dead) are reported as `dead` only.

    A download server is untrusted: only http(s) URLs are checked, at the first URL
    and at every redirect hop, and a hop to a loopback, link-local or private address
    is a failure (NDGEN_ALLOW_LOOPBACK_PORTS=PORT,… opts a local mirror's port in).
    --fetch reads at most NDGEN_MAX_DOWNLOAD bytes (default 16G) per file, and each
    request ends after NDGEN_DOWNLOAD_DEADLINE seconds in all (default 7200).
    """
    from neurodocker_nd.maintain.checkurls import check, recipe_targets, registry_targets, write_digests
    from neurodocker_nd.registry.entries import Registry

    if recipe and names:
        raise NdgenError("give NAME… or --recipe PATH, not both")
    if do_write:  # checking needs only the standard library; writing keeps comments with ruamel.yaml
        from neurodocker_nd.cli.extras import require

        require("upstream", "check-urls --write")
    registry = Registry()
    targets = recipe_targets(recipe) if recipe else registry_targets(registry, names)
    results = check(targets, timeout=timeout, do_fetch=do_fetch or do_write)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in results], indent=2))
    else:
        for r in results:
            p = r.probe
            status = "SKIP" if p is None else (str(p.status) if p.status else "ERR")
            hops = f" ({len(p.redirects)} redirect{'s' if len(p.redirects) != 1 else ''})" if p and p.redirects else ""
            digest = f"  sha256:{p.sha256}" if p and p.sha256 else ""
            note = f"  {r.problem}" if r.problem else ""
            mark = "ok  " if r.problem is None else "dead" if r.target.known_dead else "FAIL" if p else "skip"
            click.echo(
                f"{mark} {r.target.owner} {r.target.key}  "
                f"{status}{hops}  {_size(p.size if p else None)}{digest}  {r.target.url}{note}"
            )
    # Known-dead URLs (a documented `dropbox` waiver) are reported but fail nothing.
    failed = [r for r in results if r.problem is not None and r.probe is not None and not r.target.known_dead]
    if failed:
        first = failed[0]
        # --write records nothing then: digests are written for a fully passing run only.
        raise NdgenError(
            f"{len(failed)} of {len(results)} URLs failed{'; nothing recorded' if do_write else ''}; "
            f"first: {first.target.owner} {first.target.key}: {first.problem} ({first.target.url})"
        )
    for path in write_digests(results, registry) if do_write else []:
        click.echo(f"recorded digests in {path}", err=True)
