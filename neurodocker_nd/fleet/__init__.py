"""A directory of recipes → targets (recipe × arch) → plan (fingerprints vs the registry) → run → promote."""
