"""The SDK version, matched against each package manifest's ``sdk`` range."""

__version__ = "1.0.0"
