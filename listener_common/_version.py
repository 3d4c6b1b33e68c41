"""The SDK version: the one source for the ``listener-sdk`` wheel's version and for the check
of each package manifest's ``sdk`` range.

Semantic versioning: a minor version only adds (a plugin built against 1.1 runs on every later
1.x), a major version may break. So a plugin declares ``sdk = ">=1.1,<2"`` (the minor it was
built with, up to the next major), and the alert server refuses a package whose range its SDK
is outside of, with a message naming both.
"""

__version__ = "1.2.0"
