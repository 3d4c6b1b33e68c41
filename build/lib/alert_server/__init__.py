"""The alert server: hot-loads listener plugins and delivers events to them."""
