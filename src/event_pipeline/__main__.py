"""``python -m event_pipeline`` and the ``event-pipeline`` console script (see ``_cli``)."""

from __future__ import annotations

import sys

from ._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
