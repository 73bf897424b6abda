"""``python -m extproc`` is the ``ai-gateway`` command."""

from extproc.ops.cli import main

raise SystemExit(main())
