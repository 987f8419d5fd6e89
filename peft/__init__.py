"""peft package."""
