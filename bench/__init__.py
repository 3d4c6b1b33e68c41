"""``make bench``: the performance targets of the listener service, measured end to end.

The real servers run as subprocesses, a separate load-generator process drives them over gRPC,
and the same run measures the machine's own limits (a bare gRPC echo server, raw sqlite3) so
every figure can be read as a ratio to what this box can do at all.
"""
