"""listenerctl, the operator's command line: ``python -m listener_cli --help``."""
