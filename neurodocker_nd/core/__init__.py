"""Infrastructure every pipeline shares: files, YAML, HTTP, the Docker engine.

Knows nothing about recipes, templates or images' meaning: paths (where the data
lives), outfile (whole-or-nothing writes), scratchdir and safefs (private scratch,
no-follow fd-relative operations), yamlfile (YAML + JSON Schema with file:line),
fetch (verified downloads), engine and runcapture (the Docker SDK edge).
"""
