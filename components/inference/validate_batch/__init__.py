"""Component package."""
