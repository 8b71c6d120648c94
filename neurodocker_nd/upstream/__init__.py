"""Registry additions flowing back to upstream neurodocker.

One module per step, data flowing one way:

    registry/*/template.yaml ──▶ export (patch series + PR.md, each proven by
    ``proof`` against upstream's own tree, schema, registry and renderer)
    ──▶ upstream-patches/<name>/ ──▶ bot (push branch to the fork, open/update/
    close pull requests through ``github``).

``tree`` builds the upstream git tree the patches are made against, ``gitcmd``
runs git with a fixed identity and clock (byte-identical output) and keeps the
token out of argv, remotes and config files.
"""
