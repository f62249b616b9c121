"""A learned quality-control network for the expected IoU, cross-validated by group.

Issue 23, part 2, direction 2: a small CNN that sees the image and the outline, as
quality-control networks do for cardiac MRI. Each nodule of the out-of-fold segmentations
cached by ``benchmarks/quality_features.py --cache`` becomes a square crop centred on its
box, of side ``--context`` times the box's longer side (at least 32 pixels; 2: the box
grown by half of it on every side; several: their crops stacked), resized to ``--size``
pixels, with `CHANNELS` per crop: the grey frame, the final
probability, the nodule's own pixels, the stage-1 mask and the flips' disagreement
$|p_0 - p_1|$. The crops are cached in ``--crops`` (npz, never in the repository).

`QCNet` (four 3x3 conv-BN-ReLU-maxpool blocks, 12-24-48-48 channels, global average
pooling, dropout, one logit) regresses the nodule's IoU with binary cross-entropy on the
soft target, with mirror, gain, gamma and shift augmentation, AdamW and a one-cycle
schedule;
it predicts with the mirror image averaged in. It is trained and scored by the grouped
5-fold CV of ``expected_iou.py`` over the frames' leak groups (the rows are out-of-fold
segmentations already, so this is nested: each QC model is trained on four parts and
scores the fifth), on one thread. Its out-of-fold output is scored alone as the frame
score, and as one more feature of the linear fit (its logit), beside the shipped six
features and beside them and the `CANDIDATES` of ``quality_features.py`` (the same outer
folds: a stacked feature, see ``docs/quality.md``), each with a paired group bootstrap
against the current fit.

    OMP_NUM_THREADS=1 python benchmarks/quality_cnn.py --frames /root/runs/qc/frames \\
        --crops /root/runs/qc/crops-64.npz --out benchmarks/results/quality-cnn.json
    OMP_NUM_THREADS=1 python benchmarks/quality_cnn.py --frames /root/runs/qc/frames \
        --crops /root/runs/qc/crops-64-c2-5.npz --context 2 5 \
        --out benchmarks/results/quality-cnn-context2-5.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from expected_iou import OUTLINE_FEATURES, _frame_scores
from quality_features import (
    CANDIDATES,
    candidate_features,
    cross_validate,
    iter_frames,
    paired_bootstrap,
)
from torch import nn

from thyroidseg.data.splits import group_kfold
from thyroidseg.inference.measurements import Nodule
from thyroidseg.inference.quality import FEATURES
from thyroidseg.io.files import atomic_write_bytes

CHANNELS = ("grey", "probability", "nodule", "stage1", "flip_gap")
"""The crop's channels, in order."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, required=True, help="quality_features.py cache")
    parser.add_argument("--crops", type=Path, required=True, help="crop cache (.npz)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument(
        "--context", type=float, nargs="+", default=[2.0], help="crop sides / box side, stacked"
    )
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality-cnn.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.crops.is_file():
        _make_crops(args.frames, args.crops, args.size, args.context)
    rows = dict(np.load(args.crops))
    frames = json.loads(str(rows["frames"]))
    groups = [f["group"] for f in frames]
    owner, y, features, candidates = (rows[k] for k in ("owner", "iou", "features", "candidates"))
    start = time.perf_counter()
    cnn = cross_validate_cnn(rows["crops"], y, owner, groups, args.epochs, args.seed)
    seconds = time.perf_counter() - start
    current = features[:, [FEATURES.index(n) for n in OUTLINE_FEATURES]]
    logit = np.log((cnn + 1e-3) / (1 - cnn + 1e-3))[:, None]
    estimates = {
        "current (6 features, ridge 10)": cross_validate(current, y, owner, groups, 10.0),
        "cnn alone": cnn,
        "6 + cnn, ridge 10": cross_validate(np.hstack([current, logit]), y, owner, groups, 10.0),
        "6 + all candidates + cnn, ridge 10": cross_validate(
            np.hstack([current, candidates, logit]), y, owner, groups, 10.0
        ),
    }
    reference = estimates["current (6 features, ridge 10)"]
    configs = {
        label: {
            **_frame_scores(frames, expected, owner),
            "vs_current": paired_bootstrap(
                frames, owner, expected, reference, args.bootstrap, groups
            ),
            "oof": expected.tolist(),
        }
        for label, expected in estimates.items()
    }
    for label, s in configs.items():
        ci = s["vs_current"]["auroc"]["ci95"]
        print(
            f"{label:<32} AUROC {s['auroc']:.3f} Spearman {s['spearman']:.3f} "
            f"MAE(1) {s['mae_one_nodule']:.3f}  dAUROC [{ci[0]:+.3f}, {ci[1]:+.3f}]"
        )
    setup = {
        "size": args.size,
        "context": args.context,
        "epochs": args.epochs,
        "seed": args.seed,
        "channels": [f"{c} x{k:g}" for k in args.context for c in CHANNELS],
    }
    result = {"setup": setup, "train_seconds": seconds, "threads": 1, "configs": configs}
    atomic_write_bytes(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print(f"5-fold CV trained in {seconds:.0f} s; written {args.out}")


def _make_crops(folder: Path, path: Path, size: int, context: list[float]) -> None:
    """The crops of every nodule of the cached frames at each ``context``, their IoUs,
    owners, `FEATURES` and `CANDIDATES`."""
    crops, ious, owner, features, candidates, frames = [], [], [], [], [], []
    for frame in iter_frames(folder):
        data = frame["data"]
        gap = np.abs(data["flip0"].astype(np.float32) - data["flip1"].astype(np.float32))
        for nodule, region in zip(frame["nodules"], frame["regions"], strict=True):
            maps = [
                data["grey"].astype(np.float32) / 255,
                data["probability"].astype(np.float32),
                region.astype(np.float32),
                data["stage1"].astype(np.float32),
                gap,
            ]
            crops.append(np.stack([crop(m, nodule, size, k) for k in context for m in maps]))
            owner.append(len(frames))
        ious += frame["ious"]
        features += list(frame["features"])
        candidates += list(candidate_features(data, frame["nodules"], frame["views"]))
        frames.append(
            {
                "stem": frame["stem"],
                "group": frame["group"],
                "iou": frame["iou"],
                "nodules": frame["ious"],
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        crops=np.asarray(crops, np.float16),
        iou=np.asarray(ious),
        owner=np.asarray(owner, int),
        features=np.asarray(features).reshape(len(ious), len(FEATURES)),
        candidates=np.asarray(candidates).reshape(len(ious), len(CANDIDATES)),
        frames=json.dumps(frames),
    )
    print(f"{len(ious)} crops of {len(frames)} frames written to {path}")


def crop(image: np.ndarray, nodule: Nodule, size: int, context: float = 2.0) -> np.ndarray:
    """The square of side $\\max(32, c \\max(w, h))$ (``context`` $c$) centred on the
    nodule's box, resized to ``size`` (bilinear; 0 outside the frame)."""
    side = max(32.0, context * max(nodule.width, nodule.height))
    scale = size / side
    cx, cy = nodule.x + nodule.width / 2, nodule.y + nodule.height / 2
    matrix = np.array(
        [[scale, 0, -scale * (cx - side / 2)], [0, scale, -scale * (cy - side / 2)]], np.float32
    )
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0)


class QCNet(nn.Module):
    """Four conv-BN-ReLU-maxpool blocks, global average pooling, dropout, one logit."""

    def __init__(self, channels: int, widths: tuple[int, ...] = (12, 24, 48, 48)):
        super().__init__()
        layers: list[nn.Module] = []
        for width in widths:
            layers += [
                nn.Conv2d(channels, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2))
        self.head = nn.Linear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x)).squeeze(1)


def cross_validate_cnn(
    crops: np.ndarray, y: np.ndarray, owner: np.ndarray, groups: list[str], epochs: int, seed: int
) -> np.ndarray:
    """Out-of-fold predicted IoU of every nodule: one `QCNet` per grouped fold."""
    predicted = np.zeros(len(y))
    for fold, (_, held_frames) in enumerate(group_kfold(groups, folds=5, seed=0)):
        held = np.isin(owner, held_frames)
        model = train(crops[~held], y[~held], epochs, seed + fold)
        predicted[held] = predict(model, crops[held])
        print(f"QC fold {fold}: trained on {int((~held).sum())} nodules", flush=True)
    return predicted


def train(crops: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> QCNet:
    """`QCNet` fitted to soft IoU targets (BCE), augmented; AdamW, one-cycle to 2e-3, batch 32."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = QCNet(crops.shape[1])
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(y) / 32))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 2e-3, total_steps=steps)
    x, target = torch.from_numpy(crops.astype(np.float32)), torch.from_numpy(y).float()
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    for _ in range(epochs):
        for batch in np.array_split(rng.permutation(len(y)), int(np.ceil(len(y) / 32))):
            inputs = _augment(x[batch].clone(), rng)
            loss = loss_fn(model(inputs), target[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    return model


def _augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Mirror half the batch; per crop, grey gain 0.8-1.2 and gamma 0.7-1.4; shift <= 4 px."""
    flip = torch.from_numpy(rng.random(len(x)) < 0.5)
    x[flip] = x[flip].flip(-1)
    gain = torch.from_numpy(rng.uniform(0.8, 1.2, len(x))).float()[:, None, None]
    gamma = torch.from_numpy(rng.uniform(0.7, 1.4, len(x))).float()[:, None, None]
    x[:, 0] = (x[:, 0].clamp(0, 1) ** gamma * gain).clamp(0, 1)
    dy, dx = (int(v) for v in rng.integers(-4, 5, 2))
    return torch.roll(x, (dy, dx), dims=(2, 3))


@torch.no_grad()
def predict(model: QCNet, crops: np.ndarray) -> np.ndarray:
    """Predicted IoU of each crop, the mirror image's prediction averaged in."""
    model.eval()
    x = torch.from_numpy(crops.astype(np.float32))
    return ((torch.sigmoid(model(x)) + torch.sigmoid(model(x.flip(-1)))) / 2).numpy()


if __name__ == "__main__":
    main()
