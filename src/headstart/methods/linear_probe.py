"""Linear probing: frozen backbone features + a multinomial logistic-regression head.

The head minimises, over the training examples,

    mean_i CE(softmax(W x_i + b), y_i) + ||W||^2 / (2 C n)

which is scikit-learn's ``LogisticRegression(C=C)`` objective divided by ``C n`` (same minimiser).
Features are standardised on the training split for conditioning and the scaling is folded back
into ``W`` and ``b``, so the saved head applies to raw features. ``C`` is chosen on the
validation split from a grid (warm-started from the strongest penalty up); the head is then
refitted on train + validation with that ``C``. Solved with full-batch L-BFGS.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .._util import progress
from ..backbones import Backbone
from ..backbones.cache import frozen_features
from ..data import Dataset
from ..errors import BadInput
from .base import FitContext, Method


@dataclass
class LinearProbeConfig:
    C: float | None = None
    """Inverse L2 strength. None: chosen on the validation split from `Cs`."""
    Cs: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
    """Grid searched when C is None."""
    max_iter: int = 60
    """L-BFGS iterations of the final fit (test accuracy had settled by 50 on banking77)."""
    select_iter: int = 25
    """L-BFGS iterations per grid point while choosing C (warm-started along the grid)."""
    patience: int = 2
    """Stop the grid search after this many values of C without a better validation accuracy."""
    refit: bool = True
    """Refit on train + validation with the chosen C (the validation split also trains)."""

    def validate(self, method: str = "linear-probe") -> None:
        def positive(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0

        if self.C is not None and not positive(self.C):
            raise BadInput(f"linear-probe option C must be a number > 0 (got {self.C!r})")
        if not isinstance(self.Cs, (tuple, list)) or not self.Cs or not all(positive(c) for c in self.Cs):
            raise BadInput(f"linear-probe option Cs must be a list of numbers > 0, e.g. --set Cs=[0.1,1,10] (got {self.Cs!r})")
        if not isinstance(self.refit, bool):
            raise BadInput(f"linear-probe option refit must be true or false (got {self.refit!r})")
        for name in ("max_iter", "select_iter", "patience"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise BadInput(f"linear-probe option {name} must be an integer >= 1 (got {getattr(self, name)!r})")


def fit_logistic_regression(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, C: float, max_iter: int, init: tuple[torch.Tensor, torch.Tensor] | None = None,
    on_iter=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (W (K, D), b (K,)) minimising mean CE(x W^T + b, y) + ||W||^2 / (2 C n)."""
    n, d = x.shape
    k = n_classes
    penalty = 1.0 / (2.0 * C * n)
    rows = torch.arange(n)

    def objective(theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        w, b = theta[: k * d].view(k, d), theta[k * d :]
        logp = torch.log_softmax(x @ w.T + b, dim=1)  # (n, K)
        loss = -logp[rows, y].mean() + penalty * (w * w).sum()
        resid = logp.exp_()  # softmax, then (P - onehot(y)) / n: the gradient wrt the logits
        resid[rows, y] -= 1.0
        resid /= n
        grad = torch.cat([(resid.T @ x + 2.0 * penalty * w).reshape(-1), resid.sum(0)])
        return float(loss), grad

    theta0 = torch.zeros(k * d + k, dtype=x.dtype) if init is None else torch.cat([init[0].reshape(-1), init[1]]).to(x.dtype)
    theta = lbfgs(objective, theta0, max_iter=max_iter, on_iter=on_iter)
    return theta[: k * d].view(k, d).clone(), theta[k * d :].clone()


def lbfgs(
    objective, theta: torch.Tensor, *, max_iter: int, history: int = 10, gtol: float = 1e-6, ftol: float = 1e-9,
    on_iter=None,
) -> torch.Tensor:
    """Minimise a smooth convex ``objective(theta) -> (f, grad)`` with L-BFGS.

    Two-loop recursion for the direction and Armijo backtracking for the step (Nocedal & Wright,
    *Numerical Optimization*, Algorithms 7.4 and 3.1). Written here rather than using
    ``torch.optim.LBFGS``, whose first ``step`` imports torch._dynamo (~1 s on this CPU).
    """
    f, g = objective(theta)
    steps: list[tuple[torch.Tensor, torch.Tensor, float]] = []  # (s, y, 1 / s.y)
    for _ in range(max_iter):
        if on_iter is not None:
            on_iter()
        if float(g.abs().max()) <= gtol:
            break
        q = g.clone()
        alphas = []
        for s, yv, rho in reversed(steps):
            a = rho * float(s.dot(q))
            alphas.append(a)
            q.add_(yv, alpha=-a)
        if steps:
            s, yv, _ = steps[-1]
            q.mul_(float(s.dot(yv)) / float(yv.dot(yv)))
        else:
            q.div_(max(1.0, float(g.norm())))
        for (s, yv, rho), a in zip(steps, reversed(alphas), strict=True):
            q.add_(s, alpha=a - rho * float(yv.dot(q)))
        direction = -q
        slope = float(g.dot(direction))
        if slope >= 0:  # not a descent direction: restart from steepest descent
            steps.clear()
            direction = -g / max(1.0, float(g.norm()))
            slope = float(g.dot(direction))
        t = 1.0
        while True:
            new = theta + t * direction
            f_new, g_new = objective(new)
            if f_new <= f + 1e-4 * t * slope or t < 1e-8:
                break
            t *= 0.5
        s, yv = new - theta, g_new - g
        sy = float(s.double().dot(yv.double()))
        if sy > 1e-12:
            steps.append((s, yv, 1.0 / sy))
            if len(steps) > history:
                steps.pop(0)
        converged = abs(f - f_new) <= ftol * max(1.0, abs(f))
        theta, f, g = new, f_new, g_new
        if converged:
            break
    return theta


class LinearProbe(Method):
    """Frozen backbone, new logistic-regression head. Trains K x (D + 1) parameters."""

    name = "linear-probe"
    config_cls = LinearProbeConfig
    trains_backbone = False

    def fit(self, backbone: Backbone, train: Dataset, val: Dataset, ctx: FitContext) -> dict[str, Any]:
        self.config.validate()
        t0 = time.perf_counter()
        both = Dataset.concat(train, val)
        feats, n_encoded = frozen_features(backbone, ctx.backbone_hash, both, ctx.precision, desc="encoding train+validation")  # the bar counts both splits
        t_encode = time.perf_counter() - t0
        index = {c: i for i, c in enumerate(ctx.classes)}
        y = torch.tensor([index[c] for c in both.labels])
        x = torch.from_numpy(feats)
        n_train = len(train)

        t1 = time.perf_counter()
        self.weight_, self.bias_, chosen, val_scores = fit_probe_head(x, y, n_train, len(ctx.classes), self.config)
        self.C_ = chosen
        return {
            "C": chosen,
            "val_accuracy_by_C": val_scores,
            "trainable_params": int(self.weight_.numel() + self.bias_.numel()),
            "frozen_params": backbone.param_count(),
            "examples_encoded": n_encoded,
            "examples_from_cache": len(both) - n_encoded,
            "encode_s": round(t_encode, 3),
            "fit_s": round(time.perf_counter() - t1, 3),
        }

    def predict_proba(self, backbone: Backbone, data: Dataset, ctx: FitContext) -> np.ndarray:
        feats, _ = frozen_features(backbone, ctx.backbone_hash, data, ctx.precision, desc="encoding")
        logits = torch.from_numpy(feats) @ self.weight_.T + self.bias_
        return torch.softmax(logits, dim=1).numpy()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"head.weight": self.weight_, "head.bias": self.bias_}

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        self.weight_ = tensors["head.weight"]
        self.bias_ = tensors["head.bias"]

    def resolved_config(self) -> dict[str, Any]:
        cfg = asdict(self.config)
        cfg["Cs"] = list(cfg["Cs"])
        if hasattr(self, "C_"):
            cfg["C"] = self.C_
        return cfg


def fit_probe_head(
    x: torch.Tensor, y: torch.Tensor, n_train: int, n_classes: int, cfg: LinearProbeConfig
) -> tuple[torch.Tensor, torch.Tensor, float, dict[str, float]]:
    """The probe's head on features ``x`` (the first ``n_train`` rows train, the rest validate).

    Returns (W, b, chosen C, validation accuracy by C); W and b apply to raw features.
    """
    k = n_classes
    # Standardise with training-split statistics (for conditioning); folded into W, b below.
    mean, std = _standardiser(x[:n_train])
    xs = (x - mean) / std
    val_scores: dict[str, float] = {}
    fits: dict[float, tuple[torch.Tensor, torch.Tensor]] = {}
    if cfg.C is None:
        # Strongest penalty first, each fit warm-started from the previous one; stop once the
        # validation accuracy has not improved for `patience` grid steps.
        init, best_c, best_acc, since_best = None, None, -1.0, 0
        grid = sorted(cfg.Cs)
    # One bar over L-BFGS iterations (a C's fit can take minutes on many classes): each C's
    # block of at most select_iter, then the final fit's max_iter. A block that converges early
    # or a search that stops early jumps the bar to the next block, so the ETA is an upper bound.
    blocks = (len(grid) * cfg.select_iter if cfg.C is None else 0) + cfg.max_iter
    with progress(blocks, "choosing C and fitting the head" if cfg.C is None else "fitting the head", unit="iter") as bar:
        tick = lambda: bar.update(1)  # noqa: E731
        done = 0
        if cfg.C is None:
            for c in grid:
                init = fit_logistic_regression(xs[:n_train], y[:n_train], k, c, cfg.select_iter, init, on_iter=tick)
                done += cfg.select_iter
                bar.update(done - bar.n)
                fits[c] = init
                acc = float(((xs[n_train:] @ init[0].T + init[1]).argmax(1) == y[n_train:]).float().mean())
                val_scores[f"{c:g}"] = round(acc, 6)
                if acc > best_acc + 1e-12:  # ties keep the stronger penalty
                    best_c, best_acc, since_best = c, acc, 0
                else:
                    since_best += 1
                    if since_best >= cfg.patience:
                        break
            bar.update(len(grid) * cfg.select_iter - bar.n)
            chosen = float(best_c)
        else:
            chosen = float(cfg.C)
        rows = slice(None) if cfg.refit else slice(0, n_train)
        w, b = fit_logistic_regression(xs[rows], y[rows], k, chosen, cfg.max_iter, fits.get(chosen), on_iter=tick)
        bar.update(bar.total - bar.n)  # converged before max_iter: the bar ends full
    # Fold the standardisation into the head: W (x - m) / s + b = (W / s) x + (b - (W / s) m)
    weight = (w / std).contiguous()
    return weight, (b - weight @ mean).contiguous(), chosen, val_scores


def _standardiser(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp(min=1e-6 * max(1.0, float(x.abs().max())) + 1e-12)
    if not math.isfinite(float(std.sum())):
        raise BadInput("features contain NaN or infinity; the backbone produced invalid outputs")
    return mean, std
