"""Registry additions flowing back upstream: neurodocker templates and neurocontainers recipes.

One module per step, data flowing one way:

    registry/*/template.yaml ──▶ candidate (what is exportable, what it changes)
    ──▶ neurodocker (target 1: commits on upstream's tree, each series proven by
    ``proof`` against upstream's own tree, schema, registry and renderer; PR.md from
    ``pr_body``, docs/CI edits from ``registration``) or neurocontainers (target 2:
    their recipe format) ──▶ series (upstream-patches/<name>/, written whole)
    ──▶ bot (push branch to the fork, open/update/close pull requests through ``github``).

``tree`` builds the upstream git tree the patches are made against, ``merge`` replays
the registry's changes onto upstream's template, ``gitcmd`` runs git with a fixed
identity and clock (byte-identical output) and keeps the token out of argv, remotes
and config files.
"""
