"""Nodule quality: how far to trust each outline, as an expected IoU with an expert's.

The segmenter knows more about each nodule than its outline: how sure the network is inside
it, whether the two stages and the two flips of test-time augmentation agree on it, how large
it is and whether it touches the edge of the scan. `nodule_features` turns this into one row
of `FEATURES` per nodule; `ExpectedIoU` maps the row to an expected IoU in ``[0, 1]``, a
logistic (quasi-binomial) regression fitted to the IoU that out-of-fold predictions reached,
calibrated by isotonic regression. It is plain data (`ExpectedIoU.to_dict`), stored in a
shipped checkpoint as ``config["quality"]``, so that `thyroidseg.inference.Segmenter` fills in
`thyroidseg.inference.measurements.Nodule.expected_iou` and ``review``. `quality_scores` are
the scores it is judged by. Rationale and the measured scores: ``docs/quality.md``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from thyroidseg.inference.measurements import Nodule, ViewBox

__all__ = [
    "BORDER_PX",
    "CONFIDENT",
    "FEATURES",
    "WINDOW_MARGIN",
    "Evidence",
    "ExpectedIoU",
    "assess",
    "nodule_features",
    "nodule_regions",
    "quality_scores",
    "review_threshold",
    "stored_estimator",
]

FEATURES: tuple[str, ...] = (
    "mean_probability",
    "p10_probability",
    "confident_share",
    "stage_agreement",
    "flip_agreement",
    "log_area_fraction",
    "border_contact",
    "components",
    "split_screen",
)
"""The columns of `nodule_features`, in order (definitions there)."""

CONFIDENT = 0.9
"""Probability over which a pixel counts for ``confident_share``."""
BORDER_PX = 2
"""Distance (pixels) from its view's edge within which an outline pixel counts as contact."""
WINDOW_MARGIN = 0.25
"""The agreement window grows a nodule's box by this share of its longer side."""


@dataclass(frozen=True)
class Evidence:
    """What the segmenter saw of one frame besides its final mask and probability.

    Attributes
    ----------
    stage1
        The whole-frame network's post-processed ``{0, 1}`` mask before the refine stage
        (``None`` without one), at the frame's size.
    flips
        The whole-frame network's nodule probability of the frame and of its mirror image
        (mirrored back), each at the frame's size.
    """

    stage1: np.ndarray | None
    flips: tuple[np.ndarray, np.ndarray]


def nodule_regions(mask: np.ndarray, nodules: Sequence[Nodule]) -> list[np.ndarray]:
    """The pixels of each nodule: a ``bool`` map of the mask's shape per `Nodule`.

    A nodule is the 8-connected component of ``mask`` whose bounding box and area are the
    nodule's, as `thyroidseg.inference.measurements.measure` found it (with or without
    views: a component lies inside its view).

    Raises
    ------
    ValueError
        A nodule that is no component of ``mask`` (measured on another mask).
    """
    binary = (np.asarray(mask) != 0).astype(np.uint8)
    regions = []
    for nodule in nodules:
        region = np.zeros(binary.shape, bool)
        region[_box(nodule)] = _component(binary, nodule)
        regions.append(region)
    return regions


def nodule_features(
    mask: np.ndarray,
    probability: np.ndarray,
    evidence: Evidence,
    nodules: Sequence[Nodule],
    views: Sequence[ViewBox] | None = None,
) -> np.ndarray:
    r"""One row of `FEATURES` per nodule of a frame, ``float64 (K, len(FEATURES))``.

    With $R$ the nodule's pixels, $p$ the final nodule probability, $W$ its
    bounding box grown by `WINDOW_MARGIN` of its longer side (at least 2 pixels) inside its
    view $V$, and $\mathrm{IoU}_W(A, B) = |A \cap B \cap W| / |(A \cup B) \cap W|$
    (1 when the union is empty):

    - ``mean_probability`` $= \overline{p}_R$; ``p10_probability``: the 10th percentile
      of $p$ over $R$; ``confident_share`` $= |\{p > 0.9\} \cap R| / |R|$;
    - ``stage_agreement`` $= \mathrm{IoU}_W(\text{stage-1 mask}, \text{final mask})$
      (1 without a refine stage);
    - ``flip_agreement`` $= \mathrm{IoU}_W(p_0 > 0.5, p_1 > 0.5)$ for the whole-frame
      probabilities of the frame and of its mirror image;
    - ``log_area_fraction`` $= \log_{10}(|R| / |V|)$;
    - ``border_contact``: the share of the outline's pixels (pixels of $R$ with an
      8-neighbour outside it) within `BORDER_PX` pixels of the edge of $V$;
    - ``components``: the number of nodules in the frame; ``split_screen``: 1 when the frame
      has several views, else 0.

    ``nodules`` are `thyroidseg.inference.measurements.measure`'s of ``mask`` with ``views``
    (``None``: the whole frame is one view).
    """
    final = np.asarray(mask) != 0
    stage1 = final if evidence.stage1 is None else np.asarray(evidence.stage1) != 0
    boxes = [(0, 0, final.shape[1], final.shape[0])] if views is None else list(views)
    binary = final.astype(np.uint8)
    rows = []
    for nodule in nodules:
        view, inside = boxes[nodule.view], _component(binary, nodule)
        values = np.asarray(probability)[_box(nodule)][inside]
        window = _window(nodule, view)
        plain, mirrored = (np.asarray(f)[window] > 0.5 for f in evidence.flips)
        rows.append(
            [
                float(values.mean()),
                float(np.percentile(values, 10)),
                float((values > CONFIDENT).mean()),
                _iou(stage1[window], final[window]),
                _iou(plain, mirrored),
                float(np.log10(nodule.area_px / ((view[2] - view[0]) * (view[3] - view[1])))),
                _border_contact(inside, nodule, view),
                float(len(nodules)),
                float(len(boxes) > 1),
            ]
        )
    return np.asarray(rows, np.float64).reshape(len(rows), len(FEATURES))


def _box(nodule: Nodule) -> tuple[slice, slice]:
    return slice(nodule.y, nodule.y + nodule.height), slice(nodule.x, nodule.x + nodule.width)


def _component(binary: np.ndarray, nodule: Nodule) -> np.ndarray:
    """The nodule's pixels in its bounding box: the component of the box that fills it.

    A component lies whole inside its own bounding box, so labelling the box alone finds it
    intact; parts of other components that reach into the box have other statistics.
    """
    _, labels, stats, _ = cv2.connectedComponentsWithStats(binary[_box(nodule)], connectivity=8)
    wanted = (0, 0, nodule.width, nodule.height, nodule.area_px)
    found = [k for k in range(1, len(stats)) if tuple(int(v) for v in stats[k]) == wanted]
    if not found:
        raise ValueError(f"nodule {nodule.nodule} is not a component of the mask given")
    return labels == found[0]


def _window(nodule: Nodule, view: ViewBox) -> tuple[slice, slice]:
    """The nodule's box grown by `WINDOW_MARGIN` of its longer side, clipped to its view."""
    grow = max(2, round(WINDOW_MARGIN * max(nodule.width, nodule.height)))
    x0, y0, x1, y1 = view
    return (
        slice(max(y0, nodule.y - grow), min(y1, nodule.y + nodule.height + grow)),
        slice(max(x0, nodule.x - grow), min(x1, nodule.x + nodule.width + grow)),
    )


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else 1.0


def _border_contact(inside: np.ndarray, nodule: Nodule, view: ViewBox) -> float:
    """Share of the outline pixels of ``inside`` (the nodule's box) within `BORDER_PX` of
    ``view``'s edge."""
    x0, y0, x1, y1 = view
    eroded = cv2.erode(inside.astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=0)
    ys, xs = np.nonzero(inside & ~eroded.astype(bool))
    ys, xs = ys + nodule.y, xs + nodule.x
    near = np.minimum.reduce([xs - x0, x1 - 1 - xs, ys - y0, y1 - 1 - ys]) < BORDER_PX
    return float(near.mean())


@dataclass(frozen=True)
class ExpectedIoU:
    r"""The expected IoU of a nodule's outline from its `FEATURES`: calibrated logistic fit.

    With features $x$ standardised by the training mean $m$ and standard
    deviation $s$, $z = (x - m) / s$,

    $$\hat y = g\big(\sigma(b_0 + b^\top z)\big), \qquad \sigma(t) = 1 / (1 + e^{-t})$$

    where $g$ is the isotonic calibration (the identity when ``calibration`` is
    ``None``): linear interpolation between its knots, constant beyond them.

    Attributes
    ----------
    features
        The feature names, in the order of the columns it takes (a subset of `FEATURES`).
    mean, scale
        $m$ and $s$ per feature.
    coefficients
        $b_0$ then $b$.
    calibration
        ``(knots, values)`` of $g$, or ``None``.
    threshold
        Nodules with an expected IoU under it are flagged for review (`review_threshold`).
    stages
        1 or 2: whether it was fitted on a whole-frame model alone or with a refine stage
        (``stage_agreement`` means nothing otherwise).
    scores
        Its cross-validated scores and how they were measured, for the record.
    """

    features: tuple[str, ...]
    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coefficients: tuple[float, ...]
    calibration: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    threshold: float = 0.5
    stages: int = 2
    scores: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.features) - set(FEATURES))
        if unknown or not self.features:
            raise ValueError(f"ExpectedIoU: unknown or no features {unknown} (known: {FEATURES})")
        count = len(self.features)
        sizes = (len(self.mean), len(self.scale), len(self.coefficients) - 1)
        if sizes != (count,) * 3:
            raise ValueError(
                f"ExpectedIoU: {count} features need {count} means and scales and "
                f"{count + 1} coefficients, got {sizes[0]}, {sizes[1]} and {sizes[2] + 1}"
            )
        numbers = [*self.mean, *self.scale, *self.coefficients, self.threshold]
        if self.calibration is not None:
            knots, values = self.calibration
            numbers += [*knots, *values]
            if len(knots) != len(values) or not knots or np.any(np.diff(knots) < 0):
                raise ValueError("ExpectedIoU: calibration needs as many values as sorted knots")
        if not np.all(np.isfinite(numbers)) or min(self.scale) <= 0:
            raise ValueError("ExpectedIoU: non-finite numbers or a scale <= 0")
        if not 0 <= self.threshold <= 1 or self.stages not in (1, 2):
            raise ValueError(
                f"ExpectedIoU: threshold {self.threshold} not in [0, 1] or stages "
                f"{self.stages} not 1 or 2"
            )

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        target: np.ndarray,
        *,
        names: Sequence[str] = FEATURES,
        ridge: float = 10.0,
        calibrate: bool = True,
        stages: int = 2,
    ) -> ExpectedIoU:
        r"""Fit to ``target`` IoUs in ``[0, 1]`` by iteratively reweighted least squares.

        Maximises the Bernoulli quasi-likelihood
        $\sum_i y_i \log \mu_i + (1 - y_i) \log(1 - \mu_i) - \tfrac{\lambda}{2}|b|^2$,
        $\mu_i = \sigma(b_0 + b^\top z_i)$ (``ridge`` $\lambda$, intercept not
        penalised): each step solves
        $(Z^\top W Z + \lambda I') \beta = Z^\top W u$ with $W = \mu(1 - \mu)$
        and the working response $u = \eta + (y - \mu) / W$. With ``calibrate``,
        $g$ is then the isotonic (pool-adjacent-violators) regression of ``target`` on
        $\mu$, one knot per pooled block at its mean $\mu$ and mean target.
        ``features`` is ``(N, len(names))``; a constant column gets scale 1.

        Raises
        ------
        ValueError
            Shapes that do not match, non-finite values, targets outside ``[0, 1]``, or
            fewer than two rows.
        """
        x, y = np.asarray(features, np.float64), np.asarray(target, np.float64)
        if x.ndim != 2 or x.shape != (len(y), len(names)) or len(y) < 2:
            raise ValueError(
                f"features must be (N >= 2, {len(names)}) for {len(y)} targets, got {x.shape}"
            )
        if not (np.isfinite(x).all() and np.isfinite(y).all()) or y.min() < 0 or y.max() > 1:
            raise ValueError("features and targets must be finite, targets in [0, 1]")
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale[scale < 1e-12] = 1.0
        z = np.column_stack([np.ones(len(y)), (x - mean) / scale])
        beta = _irls(z, y, ridge)
        fitted = cls(tuple(names), _floats(mean), _floats(scale), _floats(beta), stages=stages)
        if not calibrate:
            return fitted
        knots, values = _isotonic(fitted._linear(x), y)
        return dataclasses.replace(fitted, calibration=(_floats(knots), _floats(values)))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Expected IoU in ``[0, 1]`` of each row of ``(N, len(self.features))`` features."""
        x = np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"features must be (N, {len(self.features)}), got {x.shape}")
        mu = self._linear(x)
        if self.calibration is None:
            return mu
        return np.interp(mu, *self.calibration)

    def columns(self) -> list[int]:
        """Where this estimator's features are among `FEATURES`."""
        return [FEATURES.index(name) for name in self.features]

    def with_review(self, threshold: float, scores: Mapping[str, Any]) -> ExpectedIoU:
        """The same estimator with a review threshold and the scores that chose it."""
        return dataclasses.replace(self, threshold=float(threshold), scores=dict(scores))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, floats, strings) for a checkpoint's ``config["quality"]``."""
        return {
            "features": list(self.features),
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coefficients": list(self.coefficients),
            "calibration": (
                None if self.calibration is None else [list(v) for v in self.calibration]
            ),
            "threshold": self.threshold,
            "stages": self.stages,
            "scores": dict(self.scores),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExpectedIoU:
        """The estimator `to_dict` wrote.

        Raises
        ------
        ValueError
            Missing or unknown keys, or values `ExpectedIoU` refuses.
        """
        keys = {f.name for f in dataclasses.fields(cls)}
        required = {"features", "mean", "scale", "coefficients"}
        if not isinstance(data, Mapping) or not required <= set(data) <= keys:
            shown = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(
                f"ExpectedIoU needs keys {sorted(required)} (of {sorted(keys)}), got {shown}"
            )
        calibration = data.get("calibration")
        try:
            return cls(
                features=tuple(str(v) for v in data["features"]),
                mean=tuple(float(v) for v in data["mean"]),
                scale=tuple(float(v) for v in data["scale"]),
                coefficients=tuple(float(v) for v in data["coefficients"]),
                calibration=None
                if calibration is None
                else (tuple(map(float, calibration[0])), tuple(map(float, calibration[1]))),
                threshold=float(data.get("threshold", 0.5)),
                stages=int(data.get("stages", 2)),
                scores=dict(data.get("scores", {})),
            )
        except (TypeError, IndexError) as error:
            raise ValueError(f"ExpectedIoU: malformed data: {error}") from None

    def _linear(self, x: np.ndarray) -> np.ndarray:
        z = (x - np.asarray(self.mean)) / np.asarray(self.scale)
        eta = self.coefficients[0] + z @ np.asarray(self.coefficients[1:])
        return 1.0 / (1.0 + np.exp(-np.clip(eta, -30, 30)))


def stored_estimator(
    data: Mapping[str, Any] | None, stages: int, where: object
) -> ExpectedIoU | None:
    """The estimator stored as plain data (a checkpoint's ``config["quality"]``, an export's
    ``"quality"``) when it was fitted for ``stages``; ``None`` without one or for others.

    Raises
    ------
    ValueError
        Data `ExpectedIoU.from_dict` refuses; the message names ``where`` it was stored.
    """
    if data is None:
        return None
    try:
        estimator = ExpectedIoU.from_dict(data)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    return estimator if estimator.stages == stages else None


def _floats(values: np.ndarray) -> tuple[float, ...]:
    """Python floats (a checkpoint's safe loader refuses numpy scalars)."""
    return tuple(float(v) for v in values)


def _irls(z: np.ndarray, y: np.ndarray, ridge: float, steps: int = 100) -> np.ndarray:
    """The ridge-penalised quasi-binomial coefficients (`ExpectedIoU.fit`)."""
    penalty = ridge * np.eye(z.shape[1])
    penalty[0, 0] = 0.0
    beta = np.zeros(z.shape[1])
    beta[0] = np.log((y.mean() + 1e-6) / (1 - y.mean() + 1e-6))
    for _ in range(steps):
        eta = z @ beta
        mu = 1.0 / (1.0 + np.exp(-eta))
        w = np.clip(mu * (1 - mu), 1e-6, None)
        working = eta + (y - mu) / w
        updated = np.linalg.solve(z.T @ (w[:, None] * z) + penalty, z.T @ (w * working))
        if np.max(np.abs(updated - beta)) < 1e-9:
            return updated
        beta = updated
    return beta


def _isotonic(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots and values of the increasing least-squares fit of ``y`` on ``x`` (PAV).

    Each block of pooled points becomes one knot, at the mean ``x`` of its points, with the
    mean ``y``; interpolating between the knots keeps the order of distinct fitted values
    (no flat steps, which would tie frames the logistic fit told apart).
    """
    order = np.argsort(x, kind="stable")
    blocks: list[list[float]] = []  # [sum of y, sum of x, count]
    for xi, yi in zip(x[order], y[order], strict=True):
        blocks.append([yi, xi, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][2] >= blocks[-1][0] / blocks[-1][2]:
            total, where, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += where
            blocks[-1][2] += count
    knots = np.array([b[1] / b[2] for b in blocks])
    return knots, np.array([b[0] / b[2] for b in blocks])


def assess(
    estimator: ExpectedIoU,
    nodules: Sequence[Nodule],
    mask: np.ndarray,
    probability: np.ndarray,
    evidence: Evidence,
    views: Sequence[ViewBox],
) -> list[Nodule]:
    """``nodules`` with ``expected_iou`` (`ExpectedIoU.predict`) and ``review`` (under its
    threshold) filled in."""
    if not nodules:
        return []
    features = nodule_features(mask, probability, evidence, nodules, views)
    expected = estimator.predict(features[:, estimator.columns()])
    return [
        dataclasses.replace(n, expected_iou=float(e), review=bool(e < estimator.threshold))
        for n, e in zip(nodules, expected, strict=True)
    ]


def review_threshold(expected: np.ndarray, actual: np.ndarray, bad: float = 0.5) -> float:
    r"""The threshold $t$ on expected IoU that best finds outlines with IoU under ``bad``.

    Maximises Youden's $J(t) = \mathrm{TPR}(t) - \mathrm{FPR}(t)$ of the rule
    "review when expected $< t$" over the midpoints between sorted ``expected`` values
    (the positives: ``actual < bad``); 0.5 when there are no positives or no negatives.
    """
    expected, positive = np.asarray(expected, float), np.asarray(actual, float) < bad
    if positive.all() or not positive.any():
        return 0.5
    values = np.unique(expected)
    candidates = np.concatenate([(values[:-1] + values[1:]) / 2, [values[-1] + 1e-9]])
    flagged = expected[None, :] < candidates[:, None]
    youden = flagged[:, positive].mean(axis=1) - flagged[:, ~positive].mean(axis=1)
    return float(candidates[int(np.argmax(youden))])


def quality_scores(frame_score: np.ndarray, frame_iou: np.ndarray, bad: float = 0.5) -> dict:
    r"""The scores of an expected IoU per frame against the frames' actual IoU.

    ``frame_score`` is the lowest expected IoU of a frame's nodules (0 without a nodule).

    - ``auroc``: the probability that a frame with IoU under ``bad`` scores lower than one
      with IoU at or over it (ties count half), the area under the ROC curve of finding the
      bad frames by a low score;
    - ``spearman``: Pearson's correlation of the ranks (ties get their mean rank; NaN when
      either is constant);
    - ``mae``: $\overline{|\mathrm{score} - \mathrm{IoU}|}$;
    - ``frames``, ``bad_frames``: the counts.
    """
    score, iou = np.asarray(frame_score, float), np.asarray(frame_iou, float)
    positive = iou < bad
    ranks = _ranks(-score)
    pos, neg = int(positive.sum()), int((~positive).sum())
    auroc = (ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg) if pos and neg else np.nan
    return {
        "auroc": float(auroc),
        "spearman": _pearson(_ranks(score), _ranks(iou)),
        "mae": float(np.abs(score - iou).mean()),
        "frames": len(iou),
        "bad_frames": pos,
    }


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    norm = float(np.sqrt((a**2).sum() * (b**2).sum()))
    return float((a * b).sum() / norm) if norm > 0 else float("nan")


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties at their mean rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse = np.unique(values, return_inverse=True)
    return (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]
