"""The toy world: a synthetic scene world with exact masks and a small text-to-image model."""
