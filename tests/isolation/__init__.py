"""Plugin isolation: namespaces, hot swap, clean unload, faults, process mode, concurrency."""
