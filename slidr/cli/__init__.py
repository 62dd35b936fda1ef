"""The ``slidr`` console script: one module per subcommand group. Nothing imports this package."""
