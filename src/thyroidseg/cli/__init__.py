"""The ``thyroidseg`` command line (also ``python -m thyroidseg``).

- `thyroidseg.cli.main`: `build_parser` and `main` (re-exported here), and the commands of
  the inference side;
- `thyroidseg.cli.options`: options and wording shared by the commands;
- `thyroidseg.cli.train`: ``thyroidseg train``;
- `thyroidseg.cli.info`: `system_info`, what ``thyroidseg info`` prints for bug reports.

Imports every other subpackage: nothing imports it.
"""

from thyroidseg.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
