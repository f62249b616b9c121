"""Turn a training run's ``last.pt`` into the model shipped inside the package.

Keeps what inference needs (format, ``config`` with the model and preprocessing, the
weights) and drops what only resuming needs (optimizer, scheduler, RNG state, history), so
the file is a third of the size. Adds ``config["inference"]``, the inference settings chosen
by cross-validation, which `Segmenter.pretrained` uses, and ``config["provenance"]``: the
command and the CV result behind the model. Written with `save_checkpoint` (weights
SHA-256 and library version included).

    python scripts/package_model.py runs/shipped/last.pt --tta \\
        --command "thyroidseg train ../shared/data/ddti runs/shipped --all ..." \\
        --cv benchmarks/results/cv-stem2-128-tta.json

``--quality benchmarks/results/expected-iou.json`` stores the expected-IoU estimator that
``benchmarks/expected_iou.py`` fitted on out-of-fold predictions (its ``"estimator"``) as
``config["quality"]`` of the whole-frame model, so that `Segmenter.pretrained` rates every
nodule (`thyroidseg.inference.quality.ExpectedIoU`).

``--stage refine`` packages a ``thyroidseg train --stage refine --all`` run as the shipped
second stage (``shipped_weights("refine")``); it takes no inference settings (the
whole-frame model's apply).

``--member RUN/last.pt`` (repeatable) adds whole-frame networks trained otherwise (another
seed) with the same preprocessing: the file then holds one ``"ensemble"`` model
(`thyroidseg.models.registry.ensemble_config`) whose prediction is the mean of the members'
probabilities (`thyroidseg.models.ensemble.Ensemble`), and ``--command`` is given once per
network. ``--half`` stores the weights in float16 (`half_precision`; loaded back into a
float32 network), half the bytes, where cross-validation showed that the rounding costs
nothing (``benchmarks/ddti_cv.py --half-weights``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from thyroidseg.inference.quality import ExpectedIoU
from thyroidseg.models.checkpoint import half_precision, load_checkpoint, save_checkpoint
from thyroidseg.models.loading import shipped_weights
from thyroidseg.models.registry import canonical_name, ensemble_config

KEEP = ("format", "config", "model")
PREPARATION = ("size", "preprocess", "preprocess_options", "crops")
"""The ``config["data"]`` entries an ensemble's members must share (not the augmentation)."""
PACKAGED = ("inference", "provenance", "quality")
"""What this script writes into ``config``: dropped from a packaged file given again."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="last.pt of a `thyroidseg train --all` run")
    parser.add_argument(
        "--member",
        type=Path,
        action="append",
        default=[],
        help="last.pt of another whole-frame run to average with it (repeatable)",
    )
    parser.add_argument("--stage", choices=("whole", "refine"), default="whole")
    parser.add_argument("--tta", action="store_true", help="recommend flip TTA")
    parser.add_argument("--fill-holes", action="store_true")
    parser.add_argument("--min-area", type=int, default=0)
    parser.add_argument("--min-probability", type=float, default=0.0)
    parser.add_argument("--half", action="store_true", help="store the weights in float16")
    parser.add_argument(
        "--command",
        action="append",
        required=True,
        help="the command that trained it (once per checkpoint, in order)",
    )
    parser.add_argument("--cv", required=True, help="the CV result file that chose the recipe")
    parser.add_argument(
        "--quality", type=Path, default=None, help="expected-IoU JSON of expected_iou.py"
    )
    parser.add_argument("--out", type=Path, default=None, help="default: the package's file")
    args = parser.parse_args()
    if args.stage == "refine" and (
        args.tta or args.fill_holes or args.min_area or args.min_probability or args.member
    ):
        parser.error("the refine stage takes the whole-frame model's inference settings")
    if args.stage == "refine" and args.quality is not None:
        parser.error("--quality goes with the whole-frame model (--stage whole)")
    paths = [args.checkpoint, *args.member]
    if len(args.command) != len(paths):
        parser.error(f"give --command once per checkpoint ({len(paths)}), in the same order")
    out = args.out if args.out is not None else Path(str(shipped_weights(args.stage)))
    if any(out.resolve() == path.resolve() for path in paths):
        parser.error(f"{out} is one of the checkpoints read: write the package elsewhere (--out)")
    shipped = _combine(paths, [load_checkpoint(path) for path in paths])
    if args.half:
        shipped["model"] = half_precision(shipped["model"])
    shipped["config"]["provenance"] = {
        "command": args.command[0] if len(paths) == 1 else args.command,
        "cross_validation": args.cv,
    }
    if args.stage == "whole":
        inference = {
            "tta": args.tta,
            "fill_holes": args.fill_holes,
            "min_area": args.min_area,
            "min_probability": args.min_probability,
        }
        shipped["config"]["inference"] = inference
    if args.quality is not None:
        estimator = ExpectedIoU.from_dict(json.loads(args.quality.read_text())["estimator"])
        shipped["config"]["quality"] = estimator.to_dict()
        shipped["config"]["provenance"]["quality"] = str(args.quality)
    save_checkpoint(out, shipped)
    print(f"written {out} ({out.stat().st_size / 1e6:.1f} MB)")


def _combine(paths: list[Path], checkpoints: list[dict[str, Any]]) -> dict[str, Any]:
    """What inference needs of one checkpoint; of several, one ``"ensemble"`` checkpoint."""
    first = checkpoints[0]
    shipped = {key: first[key] for key in KEEP if key in first}
    stored = first["config"]
    shipped["config"] = {
        **{key: value for key, value in stored.items() if key not in PACKAGED},
        "model_class": canonical_name(stored.get("model_class")),  # the registered name
        "prepare_batch": canonical_name(stored.get("prepare_batch")),
    }
    if len(checkpoints) == 1:
        return shipped
    for path, checkpoint in zip(paths[1:], checkpoints[1:], strict=True):
        data, first_data = checkpoint["config"].get("data", {}), stored.get("data", {})
        for key in PREPARATION:
            if data.get(key) != first_data.get(key):
                raise SystemExit(
                    f"{path}: data[{key!r}] is {data.get(key)!r}, but {first_data.get(key)!r} "
                    f"in {paths[0]}: an ensemble's members must see frames prepared alike"
                )
    shipped["config"]["model_class"] = "ensemble"
    shipped["config"]["model"] = ensemble_config(
        [(c["config"].get("model_class"), c["config"]["model"]) for c in checkpoints]
    )
    shipped["model"] = {
        f"members.{index}.{key}": tensor
        for index, checkpoint in enumerate(checkpoints)
        for key, tensor in checkpoint["model"].items()
    }
    return shipped


if __name__ == "__main__":
    main()
