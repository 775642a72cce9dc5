"""``python -m backpack_actors``."""

from backpack_actors.cli import main

raise SystemExit(main())
