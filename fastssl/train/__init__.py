"""The accelerate training loop and what it needs."""
