"""``python -m thyroidseg`` runs the command line."""

from thyroidseg.cli import main

raise SystemExit(main())
