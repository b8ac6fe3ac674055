"""Seed 004's reliability protocol: how much a quantized model's accuracy depends on the
calibration draw, overall and per class.

Each trial draws a new calibration set from a labeled pool (its own seed), optionally
replaces a share of it with noise images (seed 004 B.5) or makes one class dominate it
(B.6), quantizes with the same settings, and evaluates the result on the test set.
The report gives overall and per-class top-1 as mean ± std over trials, the worst class
and its drop against the float model, and a box plot of per-class drops (the paper's
figure). The average hides what the worst class shows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from faaq_onnx.errors import FaaqError


@dataclass
class CalibrationDraw:
    size: int = 256
    noise_share: float = 0.0  # share of the calibration set replaced by noise images
    dominant_class: int | None = None  # B.6: this class makes up `dominant_share` of the draw
    dominant_share: float = 0.5
    held_out: int = 64

    def __post_init__(self) -> None:
        if self.size < 1:
            raise FaaqError(f"calibration size must be at least 1, got {self.size}")
        if not 0 <= self.noise_share <= 1:
            raise FaaqError(f"noise share must be in [0, 1], got {self.noise_share}")
        if not 0 < self.dominant_share <= 1:
            raise FaaqError(f"dominant share must be in (0, 1], got {self.dominant_share}")

    def draw(self, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(calibration samples, held-out samples) for one trial."""
        rng = np.random.default_rng(seed)
        n = len(x)
        if self.size + self.held_out > n:
            raise FaaqError(
                f"the pool has {n} samples; a draw needs {self.size} + {self.held_out} held out"
            )
        if self.dominant_class is None:
            idx = rng.choice(n, size=self.size, replace=False)
        else:
            mine = np.flatnonzero(y == self.dominant_class)
            rest = np.flatnonzero(y != self.dominant_class)
            if len(mine) == 0:
                raise FaaqError(
                    f"class {self.dominant_class} does not occur in the calibration pool"
                )
            k = min(int(round(self.dominant_share * self.size)), len(mine))
            idx = np.concatenate(
                [
                    rng.choice(mine, size=k, replace=False),
                    rng.choice(rest, size=self.size - k, replace=False),
                ]
            )
        left = np.setdiff1d(np.arange(n), idx)
        held = rng.choice(left, size=self.held_out, replace=False)
        calib = x[np.sort(idx)].copy()
        n_noise = int(round(self.noise_share * self.size))
        if n_noise:
            which = rng.choice(self.size, size=n_noise, replace=False)
            calib[which] = _noise_like(calib[which], x, rng)
        return calib, x[np.sort(held)]


def _noise_like(samples: np.ndarray, pool: np.ndarray, rng) -> np.ndarray:
    """Noise images in the model's input space: uniform over each channel's observed range."""
    axes = tuple(i for i in range(pool.ndim) if i != 1)
    lo, hi = pool.min(axis=axes, keepdims=True), pool.max(axis=axes, keepdims=True)
    return (lo + (hi - lo) * rng.random(samples.shape)).astype(samples.dtype)


def run_trials(
    model,
    pool: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    config,
    trials: int,
    draw: CalibrationDraw,
    input_name: str,
    progress=None,
    class_names=None,
) -> dict:
    """Quantize `trials` times with fresh calibration draws and evaluate each on `test`."""
    from dataclasses import replace

    from faaq_onnx.evaluate import evaluate
    from faaq_onnx.pipeline import quantize

    if trials < 2:
        raise FaaqError(f"a reliability run needs at least 2 trials, got {trials}")
    x_test, y_test = test
    float_rep = evaluate(model, x_test, y_test, class_names=class_names)
    runs = []
    for t in range(trials):
        t0 = time.perf_counter()
        seed = config.seed + t
        calib, held = draw.draw(*pool, seed)
        cfg = replace(
            config, seed=seed, calib_size=len(calib), verify_samples=len(held), progress=False
        )
        res = quantize(model, {input_name: np.concatenate([calib, held])}, config=cfg)
        rep = evaluate(res.model, x_test, y_test, class_names=class_names)
        runs.append(
            {
                "seed": seed,
                "top1": rep["top1"],
                "per_class": {c: v["top1"] for c, v in rep["per_class"].items()},
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        if progress:
            progress(t + 1, trials, rep["top1"])
    return summarize(float_rep, runs, draw, config)


def summarize(float_rep: dict, runs: list[dict], draw: CalibrationDraw, config) -> dict:
    classes = list(float_rep["per_class"])
    top1 = np.array([r["top1"] for r in runs])
    per = {c: np.array([r["per_class"][c] for r in runs]) for c in classes}
    drops = {c: float_rep["per_class"][c]["top1"] - per[c] for c in classes}
    mean_drop = {c: float(d.mean()) for c, d in drops.items()}
    worst = max(mean_drop, key=mean_drop.__getitem__)
    return {
        "scheme": str(config.scheme),
        "trials": len(runs),
        "draw": draw.__dict__,
        "float": {
            "top1": float_rep["top1"],
            "per_class": {c: v["top1"] for c, v in float_rep["per_class"].items()},
        },
        "top1": {"mean": float(top1.mean()), "std": float(top1.std(ddof=1))},
        "per_class": {
            c: {
                "mean": float(per[c].mean()),
                "std": float(per[c].std(ddof=1)),
                "drop_mean": mean_drop[c],
                "drop_max": float(drops[c].max()),
            }
            for c in classes
        },
        "worst_class": {
            "class": worst,
            "drop_mean": mean_drop[worst],
            "drop_max": float(drops[worst].max()),
        },
        "runs": runs,
    }


def to_markdown(summary: dict) -> str:
    pct = lambda m, s: f"{100 * m:.2f} ± {100 * s:.2f}"  # noqa: E731
    lines = [
        f"{summary['scheme']}, {summary['trials']} calibration draws of {summary['draw']['size']} samples"
        f" (noise share {summary['draw']['noise_share']:g}"
        + (
            f", class {summary['draw']['dominant_class']} at {summary['draw']['dominant_share']:g}"
            if summary["draw"]["dominant_class"] is not None
            else ""
        )
        + ")",
        "",
        "| | float | quantized (mean ± std) | drop (mean / worst trial) |",
        "|---|---|---|---|",
        f"| average | {100 * summary['float']['top1']:.2f} | {pct(summary['top1']['mean'], summary['top1']['std'])} | "
        f"{100 * (summary['float']['top1'] - summary['top1']['mean']):.2f} |",
    ]
    for c, v in summary["per_class"].items():
        lines.append(
            f"| class {c} | {100 * summary['float']['per_class'][c]:.2f} | {pct(v['mean'], v['std'])} | "
            f"{100 * v['drop_mean']:.2f} / {100 * v['drop_max']:.2f} |"
        )
    w = summary["worst_class"]
    lines += [
        "",
        f"worst class: {w['class']}, mean drop {100 * w['drop_mean']:.2f} pt "
        f"(up to {100 * w['drop_max']:.2f} pt in one draw)",
    ]
    return "\n".join(lines) + "\n"


def plot_drops(summary: dict, path) -> None:
    """Box plot of per-class accuracy drops over the calibration draws (seed 004's figure)."""
    import matplotlib

    from faaq_onnx.outputs import savefig_atomic

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = list(summary["per_class"])
    data = [
        [100 * (summary["float"]["per_class"][c] - r["per_class"][c]) for r in summary["runs"]]
        for c in classes
    ]
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(classes)), 4))
    ax.boxplot(data, tick_labels=[str(c) for c in classes])
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("class")
    ax.set_ylabel("top-1 drop vs float (pt)")
    ax.set_title(f"{summary['scheme']}: per-class drop over {summary['trials']} calibration draws")
    fig.tight_layout()
    savefig_atomic(fig, path, dpi=110)
    plt.close(fig)
