"""HTTP/JSON transcoding of the public API (``google.api.http``), its OpenAPI document, and
the web console's static files, served on ``http_addr``."""
