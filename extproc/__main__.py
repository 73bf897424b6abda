"""``python -m extproc`` is the ``ai-gateway`` command."""

from .cli import main

raise SystemExit(main())
