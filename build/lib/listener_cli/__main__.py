import sys

from listener_cli.main import main

sys.exit(main())
