"""The ``thyroidseg`` command line (also ``python -m thyroidseg``).

- `thyroidseg.cli.main`: `build_parser` and `main` (re-exported here), and the commands
  that use no training code (``predict``, ``evaluate``, ``preprocess``, ``export``,
  ``info``);
- `thyroidseg.cli.options`: options and wording shared by the commands;
- `thyroidseg.cli.train`: the parsers of ``train`` and ``demo``, which import no training
  code; `thyroidseg.cli.run_training`: their runners, imported only when one of them runs
  (so ``import thyroidseg.cli`` loads no ``thyroidseg.training`` module);
- `thyroidseg.cli.info`: `system_info`, what ``thyroidseg info`` prints for bug reports.

At the front: it may import every other subpackage, and nothing imports it.
"""

from thyroidseg.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
