"""Losses for training sentence encoders on pairs: one class per loss.

Every loss here takes **embeddings** (the encoder has already run) and returns a tensor the
trainer can normalise per optimizer step. The contract between a loss and the trainer is one
class attribute:

- ``per_example = True`` (:class:`MultipleNegativesRankingLoss`): ``forward`` returns one loss
  per example, shape ``(B,)``. The trainer sums and divides by the examples in the optimizer step,
  exactly as it does for cross-entropy: ``(loss.sum() / step_size).backward()``.
- ``per_example = False`` (:class:`CoSENTLoss`): ``forward`` returns the batch's scalar loss (it
  compares pairs with each other, so it has no per-example terms). The trainer weights each
  micro-batch by its size: ``(loss * micro_size / step_size).backward()``, which makes the step's
  loss the size-weighted mean of its micro-batches' losses (with one micro-batch per step, the
  loss itself).

:func:`step_share` applies that rule, so the trainer needs no knowledge of which loss it holds.

What gradient accumulation does *not* give with these losses: a large batch. Both losses compare
examples inside the batch they see (in-batch negatives for MNRL, ordered pairs for CoSENT), so
``batch_size=64, grad_accum=4`` trains with 16 in-batch candidates per query, not 64. The way to
more negatives at the same memory is GradCache (Gao et al. 2021; sentence-transformers'
``CachedMultipleNegativesRankingLoss``), not accumulation.

Precision: half-precision embeddings (bf16 autocast) are promoted to float32 before the
similarities and the log-sum-exp; float64 stays float64 (the gradient checks use it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _promote(x: Tensor) -> Tensor:
    """float16/bfloat16 -> float32 (a softmax over scaled cosines loses its ranking in bf16)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_scale(scale: float) -> float:
    if not (isinstance(scale, int | float) and scale > 0 and scale == scale and scale != float("inf")):
        raise ValueError(f"scale={scale!r}: the inverse temperature must be a positive finite number (20 is usual, i.e. temperature 0.05)")
    return float(scale)


def _check_2d(name: str, x: Tensor, batch: int | None = None, dim: int | None = None) -> None:
    if x.dim() != 2:
        raise ValueError(f"{name} has shape {tuple(x.shape)}: expected (batch, dim) embeddings")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{name} has {x.shape[0]} rows but the queries have {batch}: one row per example")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{name} has dimension {x.shape[1]} but the queries have {dim}: embed both with the same encoder")


class MultipleNegativesRankingLoss(nn.Module):
    r"""In-batch negatives ranking loss for (query, positive) pairs, optionally with hard negatives.

    Each query must score its own positive above every other candidate in the batch: the other
    examples' positives (in-batch negatives) and every hard negative in the batch. With
    :math:`s(x, y)` the cosine similarity, :math:`\tau = 1/\text{scale}`, queries :math:`q_i`,
    positives :math:`p_j` and hard negatives :math:`n_{jk}` (``i, j < B``, ``k < K``):

    .. math::

        \ell_i = -\log \frac{e^{s(q_i, p_i)/\tau}}
                 {\sum_{j} e^{s(q_i, p_j)/\tau} + \sum_{j,k} e^{s(q_i, n_{jk})/\tau}}

    i.e. cross-entropy over the ``B + B*K`` candidate columns with the diagonal as targets. With
    ``symmetric=True`` each example also gets the passage-to-query term (each positive must
    pick its own query among the batch's queries; hard negatives are not rows there) and the two
    are averaged: :math:`\ell_i = \tfrac12(\ell_i^{q\to p} + \ell_i^{p\to q})`.

    Papers: Henderson et al. 2017, "Efficient Natural Language Response Suggestion for Smart
    Reply" (the multiple-negatives ranking loss); van den Oord et al. 2018, "Representation
    Learning with Contrastive Predictive Coding" (InfoNCE, the same loss); the symmetric variant as
    in CLIP (Radford et al. 2021) and Günther et al. 2023 (Jina Embeddings 2).

    Inputs to :meth:`forward`:
        - ``q``: query embeddings, ``(B, D)``.
        - ``p``: positive embeddings, ``(B, D)``; row ``i`` is query ``i``'s positive.
        - ``n``: hard negatives, ``None``, ``(B, D)`` (one per query) or ``(B, K, D)``
          (``K`` per query). Every query scores every example's hard negatives, not only its own.

    Returns the **per-example** losses, shape ``(B,)`` (``per_example = True``); their mean is the
    loss sentence-transformers' ``MultipleNegativesRankingLoss`` returns (the unit tests check it
    to 1e-5, with and without hard negatives, and the symmetric variant against theirs with
    ``directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction"``).

    Batches must not hold two examples with the same query or the same positive: the duplicate
    would be scored as a negative of its own query (a false negative). Build batches with
    :func:`headstart.train.sampling.no_duplicate_batches`.

    Relations:
        - :class:`CoSENTLoss` trains on graded scores of pairs instead of (query, positive)
          pairs; it has no negatives and no per-example terms.
        - With ``B = 1`` and no hard negatives the loss is 0 (one candidate): batch size is a
          hyperparameter of this loss (more candidates, a harder task, a stronger signal).
        - ``scale`` plays the role of the inverse temperature of InfoNCE and of CLIP's learnt
          logit scale (fixed here).
    """

    per_example = True

    def __init__(self, scale: float = 20.0, symmetric: bool = False):
        super().__init__()
        self.scale = _check_scale(scale)
        self.symmetric = bool(symmetric)

    def forward(self, q: Tensor, p: Tensor, n: Tensor | None = None) -> Tensor:
        _check_2d("q (queries)", q)
        B, D = q.shape
        _check_2d("p (positives)", p, B, D)
        q, p = F.normalize(_promote(q), dim=-1), F.normalize(_promote(p), dim=-1)
        candidates = p  # (B, D)
        if n is not None:
            n = _promote(n)
            if n.dim() == 2:
                n = n.unsqueeze(1)  # (B, D) -> (B, 1, D)
            if n.dim() != 3 or n.shape[0] != B or n.shape[2] != D:
                raise ValueError(f"n (hard negatives) has shape {tuple(n.shape)}: expected ({B}, {D}) or ({B}, K, {D})")
            n = F.normalize(n, dim=-1).reshape(-1, D)  # (B, K, D) -> (B*K, D)
            candidates = torch.cat([p, n], dim=0)  # (B + B*K, D): positives first, so column i is p_i
        logits = self.scale * q @ candidates.T  # (B, B + B*K)
        targets = torch.arange(B, device=q.device)
        loss = F.cross_entropy(logits, targets, reduction="none")  # (B,)
        if self.symmetric:
            # Row i: positive p_i against every query in the batch; hard negatives are columns only.
            backward = F.cross_entropy(self.scale * p @ q.T, targets, reduction="none")  # (B,)
            loss = (loss + backward) / 2
        return loss


class CoSENTLoss(nn.Module):
    r"""CoSENT: rank the batch's pairs by cosine similarity in the order of their gold scores.

    For pairs :math:`(a_i, b_i)` with gold scores :math:`y_i` and :math:`s_i = \text{scale}\cdot
    \cos(a_i, b_i)`, every ordered pair of pairs with :math:`y_i > y_j` is penalised when
    :math:`s_j` comes near or above :math:`s_i`:

    .. math::

        \mathcal{L} = \log\Big(1 + \sum_{y_i > y_j} e^{\,s_j - s_i}\Big)

    Only the order of the scores matters (not their scale), so gold scores in any range work (0-5
    STS-B scores, 0/1 labels, graded relevance); tied scores make no term. Su 2022, "CoSENT: a more
    efficient sentence vector scheme than Sentence-BERT" (blog post, kexue.fm/archives/8847);
    Huang et al. 2024, "CoSENT: Consistent Sentence Embedding via Similarity Ranking" (IEEE/ACM
    TASLP).

    Inputs to :meth:`forward`:
        - ``a``, ``b``: embeddings of the two sides, ``(B, D)`` each.
        - ``scores``: gold scores, ``(B,)`` (any real values; bool becomes 0/1).

    Returns the batch's **scalar** loss, equal to sentence-transformers' ``CoSENTLoss`` to 1e-5.

    **Normalisation under gradient accumulation** (``per_example = False``). The loss is one
    log-sum-exp over pairs of examples; it has no per-example terms, and the loss of a batch is not
    the mean of the losses of its halves. It is computed inside each micro-batch (pairs across
    micro-batches are never compared), and the trainer weights micro-batches by their size:
    ``loss * micro_size / step_size`` (:func:`step_share`), so a step's loss is the size-weighted
    mean of its micro-batch losses and, without accumulation, the loss itself. We return the plain
    scalar rather than the loss pre-multiplied by ``B`` so that the value logged, compared with
    sentence-transformers and read in a test is the loss of the formula above.

    Relations:
        - :class:`MultipleNegativesRankingLoss` needs (query, positive) pairs and uses the
          other examples as negatives; CoSENT needs scored pairs and uses the other examples as
          the ranking to agree with. A batch of (query, positive) pairs all scored 1 gives CoSENT
          nothing to learn (no ordered pairs: the loss is log 1 = 0).
        - It replaces sentence-transformers' ``CosineSimilarityLoss`` (MSE between cosine and
          score), which pushes cosines toward the gold values rather than ordering them.
    """

    per_example = False

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = _check_scale(scale)

    def forward(self, a: Tensor, b: Tensor, scores: Tensor) -> Tensor:
        _check_2d("a", a)
        B, D = a.shape
        _check_2d("b", b, B, D)
        if scores.numel() != B:
            raise ValueError(f"scores has shape {tuple(scores.shape)}: expected one score per pair, ({B},)")
        y = scores.reshape(-1)  # (B,)
        if y.dtype == torch.bool:
            y = y.to(torch.int64)
        # Cosine from normalised vectors, as in the MNRL above (and as sentence-transformers does).
        s = self.scale * (F.normalize(_promote(a), dim=-1) * F.normalize(_promote(b), dim=-1)).sum(-1)  # (B,)
        diff = s[None, :] - s[:, None]  # (B, B): diff[i, j] = s_j - s_i
        ordered = y[:, None] > y[None, :]  # (B, B): pair i should score above pair j
        terms = diff.masked_fill(~ordered, float("-inf")).reshape(-1)  # (B*B,)
        return torch.logsumexp(torch.cat([terms.new_zeros(1), terms]), dim=0)  # the 0 is the "1 +"


def step_share(loss_fn: nn.Module, value: Tensor, micro_size: int, step_size: int) -> Tensor:
    """What one micro-batch adds to its optimizer step's loss (call ``.backward()`` on it).

    ``value`` is ``loss_fn``'s output on a micro-batch of ``micro_size`` examples out of the
    step's ``step_size``. Per-example losses are summed, batch losses weighted by the micro-batch's
    size; both divided by the step size, so the step's accumulated gradient is the gradient of the
    step's (size-weighted) mean loss whatever the micro-batch sizes.
    """
    if getattr(loss_fn, "per_example", None) is None:
        raise TypeError(f"{type(loss_fn).__name__} does not say how it is normalised: give it a per_example attribute (True: forward returns (B,) losses; False: a batch scalar)")
    if loss_fn.per_example:
        if value.dim() != 1 or value.shape[0] != micro_size:
            raise ValueError(f"{type(loss_fn).__name__} returned shape {tuple(value.shape)}: expected ({micro_size},) per-example losses")
        return value.sum() / step_size
    if value.dim() != 0:
        raise ValueError(f"{type(loss_fn).__name__} returned shape {tuple(value.shape)}: expected a scalar batch loss")
    return value * (micro_size / step_size)


__all__ = ["CoSENTLoss", "MultipleNegativesRankingLoss", "step_share"]
