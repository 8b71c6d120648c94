"""Thin click wrappers, one module per subcommand; each imports its step lazily."""
