"""Server-side foundations both servers share: domain errors, configuration, gRPC bootstrap.

Nothing here knows about plugins or the store's tables; the SDK (``listener_common``) does
not depend on it.
"""
