"""``python -m topgun``: the command line (see :mod:`libs.client.cli`)."""

from libs.client.cli import main

raise SystemExit(main())
