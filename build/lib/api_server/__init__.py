"""The public API server: plugin and instance administration, and event publishing."""
