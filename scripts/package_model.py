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
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from thyroidseg.inference.quality import ExpectedIoU
from thyroidseg.models.checkpoint import load_checkpoint, save_checkpoint
from thyroidseg.models.loading import shipped_weights
from thyroidseg.models.registry import canonical_name

KEEP = ("format", "config", "model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="last.pt of a `thyroidseg train --all` run")
    parser.add_argument("--stage", choices=("whole", "refine"), default="whole")
    parser.add_argument("--tta", action="store_true", help="recommend flip TTA")
    parser.add_argument("--fill-holes", action="store_true")
    parser.add_argument("--min-area", type=int, default=0)
    parser.add_argument("--min-probability", type=float, default=0.0)
    parser.add_argument("--command", required=True, help="the command that trained it")
    parser.add_argument("--cv", required=True, help="the CV result file that chose the recipe")
    parser.add_argument(
        "--quality", type=Path, default=None, help="expected-IoU JSON of expected_iou.py"
    )
    parser.add_argument("--out", type=Path, default=None, help="default: the package's file")
    args = parser.parse_args()
    if args.stage == "refine" and (
        args.tta or args.fill_holes or args.min_area or args.min_probability
    ):
        parser.error("the refine stage takes the whole-frame model's inference settings")
    if args.stage == "refine" and args.quality is not None:
        parser.error("--quality goes with the whole-frame model (--stage whole)")
    checkpoint = load_checkpoint(args.checkpoint)
    shipped = {key: checkpoint[key] for key in KEEP if key in checkpoint}
    stored = checkpoint["config"]
    shipped["config"] = {
        **stored,
        "model_class": canonical_name(stored.get("model_class")),  # the registered name
        "prepare_batch": canonical_name(stored.get("prepare_batch")),
        "provenance": {"command": args.command, "cross_validation": args.cv},
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
    out = args.out if args.out is not None else Path(str(shipped_weights(args.stage)))
    save_checkpoint(out, shipped)
    print(f"written {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
