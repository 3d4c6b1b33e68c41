"""Operator experience: client, CLI, metrics, logs, docs and deployment files."""
