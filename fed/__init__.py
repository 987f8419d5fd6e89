"""fed package."""
