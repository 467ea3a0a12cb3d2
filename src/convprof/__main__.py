"""``python -m convprof``: the same as the ``convprof`` command."""

from convprof.cli import main

raise SystemExit(main())
