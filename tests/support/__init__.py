"""Test support: real databases, real servers (in-process and subprocesses), sample data."""
