"""The project's own chaos suite: real servers, a store behind proxies it cuts, kill -9 in a
loop, and a checker of what the plugins received (``python -m chaos``, ``make chaos``)."""
