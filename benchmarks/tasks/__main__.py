"""``python -m benchmarks.tasks``: see :mod:`benchmarks.tasks.cli`."""
from .cli import main

raise SystemExit(main())
