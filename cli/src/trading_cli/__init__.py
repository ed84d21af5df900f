"""The `trading` command."""
