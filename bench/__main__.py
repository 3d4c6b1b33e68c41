"""``python -m bench [--quick] [--db URL]``."""

from bench.cli import main

raise SystemExit(main())
