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
from ..backbones.cache import frozen_features, table_features
from ..data import Dataset
from ..data.large import TableFeatures, TableRows
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
    return fit_logistic_regression_chunks(lambda: ((x, y),), x.shape[0], x.shape[1], n_classes, C, max_iter, init,
                                          on_iter=on_iter, dtype=x.dtype)


def fit_logistic_regression_chunks(
    chunks, n: int, d: int, n_classes: int, C: float, max_iter: int, init: tuple[torch.Tensor, torch.Tensor] | None = None,
    on_iter=None, dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`fit_logistic_regression` over examples that arrive in pieces: ``chunks()`` yields
    ``(x (m, D), y (m,))`` pairs covering the ``n`` examples once per call (an in-memory tensor is
    one chunk; a feature file on disk is read a chunk at a time, so memory holds one chunk)."""
    k = n_classes
    penalty = 1.0 / (2.0 * C * n)

    def objective(theta: torch.Tensor) -> tuple[float, torch.Tensor]:
        w, b = theta[: k * d].view(k, d), theta[k * d :]
        nll = torch.zeros((), dtype=torch.float64)
        grad_w, grad_b = torch.zeros_like(w), torch.zeros_like(b)
        for x, y in chunks():
            rows = torch.arange(len(y))
            logp = torch.log_softmax(x @ w.T + b, dim=1)  # (m, K)
            nll += -logp[rows, y].double().sum()
            resid = logp.exp_()  # softmax, then (P - onehot(y)) / n: the gradient wrt the logits
            resid[rows, y] -= 1.0
            resid /= n
            grad_w += resid.T @ x
            grad_b += resid.sum(0)
        loss = float(nll) / n + float(penalty * (w * w).sum())
        return loss, torch.cat([(grad_w + 2.0 * penalty * w).reshape(-1), grad_b])

    theta0 = torch.zeros(k * d + k, dtype=dtype) if init is None else torch.cat([init[0].reshape(-1), init[1]]).to(dtype)
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
        if isinstance(train, TableRows):
            return self._fit_table(backbone, train, val, ctx)
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
        return self._fitted(backbone, chosen, val_scores, n_encoded, len(both), t_encode, t1)

    def _fit_table(self, backbone: Backbone, train: TableRows, val: TableRows, ctx: FitContext) -> dict[str, Any]:
        """The same head on a streamed table (:mod:`headstart.data.large`): every row's features
        are written to a file in chunks, and the standardisation, each L-BFGS objective and the
        validation accuracy are summed over that file a block of rows at a time."""
        t0 = time.perf_counter()
        table = train.table
        path, n_encoded = table_features(backbone, ctx.backbone_hash, table, ctx.precision, desc="encoding the table")
        t_encode = time.perf_counter() - t0
        part = np.full(table.n_rows, -1, dtype=np.int8)
        part[train.rows], part[val.rows] = 0, 1
        t1 = time.perf_counter()
        source = TableFeatures(path, part, table.codes)
        self.weight_, self.bias_, chosen, val_scores = fit_probe_head_on(source, len(ctx.classes), self.config)
        return self._fitted(backbone, chosen, val_scores, n_encoded, table.n_rows, t_encode, t1,
                            streamed={"rows": table.n_rows, "features": str(path), "block_rows": source.block})

    def _fitted(self, backbone: Backbone, chosen: float, val_scores: dict, n_encoded: int, n_examples: int,
                t_encode: float, t_fit_start: float, **extra) -> dict[str, Any]:
        """The fit record (``method.fit``) of either path, once the head is set."""
        self.C_ = chosen
        return {
            "C": chosen,
            "val_accuracy_by_C": val_scores,
            "trainable_params": int(self.weight_.numel() + self.bias_.numel()),
            "frozen_params": backbone.param_count(),
            "examples_encoded": n_encoded,
            "examples_from_cache": n_examples - n_encoded,
            **extra,
            "encode_s": round(t_encode, 3),
            "fit_s": round(time.perf_counter() - t_fit_start, 3),
        }

    def predict_table(self, backbone: Backbone, rows: TableRows, ctx: FitContext):
        """``(row indices, probabilities (m, K))`` of the rows of a streamed table, a block at a
        time in row order (features encoded into the table's feature file first when missing)."""
        table = rows.table
        path, _ = table_features(backbone, ctx.backbone_hash, table, ctx.precision, desc="encoding the table")
        part = np.full(table.n_rows, -1, dtype=np.int8)
        part[rows.rows] = 2
        for idx, x in TableFeatures(path, part, table.codes).blocks("test"):
            logits = torch.from_numpy(x) @ self.weight_.T + self.bias_
            yield idx, torch.softmax(logits, dim=1).numpy()

    def predict_proba(self, backbone: Backbone, data: Dataset, ctx: FitContext) -> np.ndarray:
        if ctx.feature_cache:
            feats, _ = frozen_features(backbone, ctx.backbone_hash, data, ctx.precision, desc="encoding")
        else:
            feats = backbone.embed(list(data.inputs), precision=ctx.precision, desc="encoding")
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
    return fit_probe_head_on(InMemoryFeatures(x, y, n_train), n_classes, cfg)


class InMemoryFeatures:
    """Features held in one tensor, as one chunk: the first ``n_train`` rows train, the rest validate.

    What :func:`fit_probe_head_on` reads (:class:`headstart.data.large.TableFeatures` is the same
    interface over a feature file on disk): ``dim``, ``sizes`` (examples per part: "train", "val"
    and "fit", the rows the final fit trains on), ``standardiser()`` (training-split mean and std)
    and ``chunks(part)`` yielding standardised ``(x, y)`` pieces once ``standardise`` was called."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n_train: int):
        self.x, self.y, self.n_train = x, y, n_train
        self.dim = x.shape[1]
        self.sizes = {"train": n_train, "val": len(y) - n_train, "fit": len(y)}

    def standardiser(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _standardiser(self.x[: self.n_train])

    def standardise(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.xs = (self.x - mean) / std

    def chunks(self, part: str):
        rows = {"train": slice(0, self.n_train), "val": slice(self.n_train, None), "fit": slice(None)}[part]
        return ((self.xs[rows], self.y[rows]),)


def fit_probe_head_on(
    source, n_classes: int, cfg: LinearProbeConfig
) -> tuple[torch.Tensor, torch.Tensor, float, dict[str, float]]:
    """:func:`fit_probe_head` on a feature source (:class:`InMemoryFeatures` or one on disk, read
    in chunks); "fit" is train + validation with ``cfg.refit``, else train."""
    k = n_classes
    # Standardise with training-split statistics (for conditioning); folded into W, b below.
    mean, std = source.standardiser()
    source.standardise(mean, std)
    d = source.dim

    def fit(part: str, c: float, iters: int, init, tick):
        return fit_logistic_regression_chunks(lambda: source.chunks(part), source.sizes[part], d, k, c, iters, init,
                                              on_iter=tick, dtype=mean.dtype)

    def val_accuracy(head) -> float:
        correct = sum(int(((x @ head[0].T + head[1]).argmax(1) == y).sum()) for x, y in source.chunks("val"))
        return correct / max(1, source.sizes["val"])

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
                init = fit("train", c, cfg.select_iter, init, tick)
                done += cfg.select_iter
                bar.update(done - bar.n)
                fits[c] = init
                acc = val_accuracy(init)
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
        w, b = fit("fit" if cfg.refit else "train", chosen, cfg.max_iter, fits.get(chosen), tick)
        bar.update(bar.total - bar.n)  # converged before max_iter: the bar ends full
    # Fold the standardisation into the head: W (x - m) / s + b = (W / s) x + (b - (W / s) m)
    weight = (w / std).contiguous()
    return weight, (b - weight @ mean).contiguous(), chosen, val_scores


def _standardiser(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp(min=std_floor(float(x.abs().max())))
    if not math.isfinite(float(std.sum())):
        raise BadInput("features contain NaN or infinity; the backbone produced invalid outputs")
    return mean, std


def std_floor(biggest: float) -> float:
    """The smallest standard deviation a feature is divided by (a constant feature stays finite)."""
    return 1e-6 * max(1.0, biggest) + 1e-12
