"""Command-line tools: `axial-deeplab <subcommand>` (see cli/main.py)."""
