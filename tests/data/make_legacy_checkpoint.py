"""Write OUT/run/last.pt: a tiny run's checkpoint, kept as tests/data/unet-0.1.x-last.pt."""

import sys
from pathlib import Path

from torch import nn

from thyroidseg import ThyroidDataset, Trainer, UNet


def main(out: Path) -> None:
    # Run against a 0.1.x checkout (tests/data/README.md), so its 0.1 module path; imported
    # here, not at the top: pytest imports this file under 0.3 too, where that path is gone.
    from thyroidseg.synthetic import write_synthetic_dataset

    data = write_synthetic_dataset(out / "data", 4, size=(48, 64), seed=0)
    Trainer(
        UNet(base_channels=4, depth=2, seed=0),
        ThyroidDataset(data, size=(32, 32), progress=False),
        loss=nn.CrossEntropyLoss(), epochs=1, batch_size=4, seed=0, out_dir=out / "run",
        progress=False, amp="off",
    ).fit()  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]))
