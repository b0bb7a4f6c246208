"""Retrieval losses: equal to sentence-transformers' on fixed embeddings, exact gradients, learnable."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from headstart.train.losses import CoSENTLoss, MultipleNegativesRankingLoss, step_share


@pytest.fixture(scope="module")
def st_losses():
    """sentence-transformers' two losses, built without a model: their compute_loss_from_embeddings
    never touches it (the model only runs in their forward, which embeds the texts)."""
    pytest.importorskip("sentence_transformers")
    try:
        from sentence_transformers.sentence_transformer.losses import CoSENTLoss as StCoSENT
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss as StMNRL
    except ImportError:  # before the 5.x/6.x layout
        from sentence_transformers.losses import CoSENTLoss as StCoSENT
        from sentence_transformers.losses import MultipleNegativesRankingLoss as StMNRL
    if not hasattr(StMNRL, "compute_loss_from_embeddings") or not hasattr(StCoSENT, "compute_loss_from_embeddings"):
        pytest.skip("this sentence-transformers has no compute_loss_from_embeddings to compare on fixed embeddings")
    return StMNRL, StCoSENT


def _emb(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# -- equivalence with sentence-transformers ---------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("scale", [20.0, 7.5])
def test_mnrl_equals_sentence_transformers(st_losses, k, scale):
    StMNRL, _ = st_losses
    B, D = 12, 16
    q, p, n = _emb(B, D, seed=1), _emb(B, D, seed=2), _emb(B, k, D, seed=3)
    ours = MultipleNegativesRankingLoss(scale=scale)(q, p, n if k else None)
    assert ours.shape == (B,)
    # theirs takes the negatives as extra columns: [anchor, positive, negative_1, ..., negative_k]
    theirs = StMNRL(None, scale=scale).compute_loss_from_embeddings([q, p, *n.unbind(1)], None)
    assert float(ours.mean()) == pytest.approx(float(theirs), abs=1e-5)


def test_mnrl_takes_one_negative_per_query_as_a_2d_tensor(st_losses):
    StMNRL, _ = st_losses
    q, p, n = _emb(8, 5, seed=4), _emb(8, 5, seed=5), _emb(8, 5, seed=6)
    loss = MultipleNegativesRankingLoss()
    assert torch.allclose(loss(q, p, n), loss(q, p, n[:, None, :]))
    theirs = StMNRL(None).compute_loss_from_embeddings([q, p, n], None)
    assert float(loss(q, p, n).mean()) == pytest.approx(float(theirs), abs=1e-5)


@pytest.mark.parametrize("k", [0, 2])
def test_symmetric_mnrl_equals_sentence_transformers_per_direction(st_losses, k):
    StMNRL, _ = st_losses
    B, D = 10, 8
    q, p, n = _emb(B, D, seed=7), _emb(B, D, seed=8), _emb(B, k, D, seed=9)
    ours = MultipleNegativesRankingLoss(symmetric=True)(q, p, n if k else None)
    theirs = StMNRL(None, directions=("query_to_doc", "doc_to_query"), partition_mode="per_direction")
    value = theirs.compute_loss_from_embeddings([q, p, *n.unbind(1)], None)
    assert float(ours.mean()) == pytest.approx(float(value), abs=1e-5)


@pytest.mark.parametrize("kind", ["continuous", "ties", "binary"])
@pytest.mark.parametrize("scale", [20.0, 5.0])
def test_cosent_equals_sentence_transformers(st_losses, kind, scale):
    _, StCoSENT = st_losses
    B, D = 16, 12
    a, b = _emb(B, D, seed=10), _emb(B, D, seed=11)
    g = torch.Generator().manual_seed(12)
    scores = {"continuous": torch.rand(B, generator=g) * 5,
              "ties": torch.randint(0, 3, (B,), generator=g).float(),
              "binary": torch.randint(0, 2, (B,), generator=g).bool()}[kind]
    ours = CoSENTLoss(scale=scale)(a, b, scores)
    assert ours.dim() == 0
    theirs = StCoSENT(None, scale=scale).compute_loss_from_embeddings([a, b], scores)
    assert float(ours) == pytest.approx(float(theirs), abs=1e-5)


# -- the formulas by hand -----------------------------------------------------------------------------


def test_mnrl_by_hand_on_orthogonal_embeddings():
    # q_i = p_i = e_i: the diagonal has cosine 1, everything else 0.
    B = 4
    eye = torch.eye(B)
    loss = MultipleNegativesRankingLoss(scale=2.0)(eye, eye)
    expected = -math.log(math.exp(2) / (math.exp(2) + (B - 1)))
    assert torch.allclose(loss, torch.full((B,), expected))
    # a hard negative equal to the query's own positive direction doubles the top term's rivals
    with_neg = MultipleNegativesRankingLoss(scale=2.0)(eye, eye, eye)
    expected_neg = -math.log(math.exp(2) / (2 * math.exp(2) + 2 * (B - 1)))
    assert torch.allclose(with_neg, torch.full((B,), expected_neg))
    # one example alone: one candidate, nothing to rank
    assert float(MultipleNegativesRankingLoss()(eye[:1], eye[:1])) == pytest.approx(0.0, abs=1e-7)


def test_cosent_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # cosines 1, 0, -1
    scale = 3.0
    s = [scale * 1.0, 0.0, -scale]
    # right order: y = 2 > 1 > 0; wrong order on the first two
    right = math.log(1 + math.exp(s[1] - s[0]) + math.exp(s[2] - s[0]) + math.exp(s[2] - s[1]))
    assert float(CoSENTLoss(scale)(a, b, torch.tensor([2.0, 1.0, 0.0]))) == pytest.approx(right, rel=1e-6)
    swapped = math.log(1 + math.exp(s[0] - s[1]) + math.exp(s[2] - s[0]) + math.exp(s[2] - s[1]))
    assert float(CoSENTLoss(scale)(a, b, torch.tensor([1.0, 2.0, 0.0]))) == pytest.approx(swapped, rel=1e-6)
    assert float(CoSENTLoss(scale)(a, b, torch.ones(3))) == 0.0  # all tied: no ordered pair


def test_half_precision_embeddings_are_scored_in_float32():
    q, p = _emb(6, 8, seed=13), _emb(6, 8, seed=14)
    loss = MultipleNegativesRankingLoss()
    assert loss(q.bfloat16(), p.bfloat16()).dtype == torch.float32
    assert CoSENTLoss()(q.bfloat16(), p.bfloat16(), torch.rand(6)).dtype == torch.float32


def test_bad_shapes_and_scales_say_what_was_given():
    loss = MultipleNegativesRankingLoss()
    with pytest.raises(ValueError, match=r"p \(positives\) has 3 rows but the queries have 4"):
        loss(torch.randn(4, 8), torch.randn(3, 8))
    with pytest.raises(ValueError, match=r"n \(hard negatives\) has shape \(4, 2, 7\)"):
        loss(torch.randn(4, 8), torch.randn(4, 8), torch.randn(4, 2, 7))
    with pytest.raises(ValueError, match="expected one score per pair"):
        CoSENTLoss()(torch.randn(4, 8), torch.randn(4, 8), torch.rand(5))
    with pytest.raises(ValueError, match="positive finite"):
        MultipleNegativesRankingLoss(scale=0)
    with pytest.raises(ValueError, match="positive finite"):
        CoSENTLoss(scale=float("nan"))


# -- gradients ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("k", [0, 2])
def test_mnrl_gradcheck(symmetric, k):
    loss = MultipleNegativesRankingLoss(scale=3.0, symmetric=symmetric)
    q = _emb(4, 3, seed=15, dtype=torch.float64).requires_grad_()
    p = _emb(4, 3, seed=16, dtype=torch.float64).requires_grad_()
    if k:
        n = _emb(4, k, 3, seed=17, dtype=torch.float64).requires_grad_()
        assert torch.autograd.gradcheck(loss, (q, p, n))
    else:
        assert torch.autograd.gradcheck(loss, (q, p))


def test_cosent_gradcheck():
    loss = CoSENTLoss(scale=3.0)
    a = _emb(5, 3, seed=18, dtype=torch.float64).requires_grad_()
    b = _emb(5, 3, seed=19, dtype=torch.float64).requires_grad_()
    scores = torch.tensor([0.0, 1.0, 1.0, 2.5, 4.0], dtype=torch.float64)  # with a tie
    assert torch.autograd.gradcheck(lambda x, y: loss(x, y, scores), (a, b))


# -- normalisation per optimizer step -----------------------------------------------------------------


def test_step_share_sums_per_example_losses_and_weighs_batch_losses_by_size():
    q, p = _emb(10, 6, seed=20), _emb(10, 6, seed=21)
    mnrl, cosent = MultipleNegativesRankingLoss(), CoSENTLoss()
    scores = torch.rand(10, generator=torch.Generator().manual_seed(22))
    # one micro-batch per step: the step's loss is the mean loss / the batch loss itself
    assert torch.allclose(step_share(mnrl, mnrl(q, p), 10, 10), mnrl(q, p).mean())
    assert torch.allclose(step_share(cosent, cosent(q, p, scores), 10, 10), cosent(q, p, scores))
    # unequal micro-batches (7 + 3): per-example sums over the step / size-weighted batch mean
    parts = [slice(0, 7), slice(7, 10)]
    got = sum(step_share(mnrl, mnrl(q[s], p[s]), len(range(10)[s]), 10) for s in parts)
    assert torch.allclose(got, torch.cat([mnrl(q[s], p[s]) for s in parts]).mean())
    got = sum(step_share(cosent, cosent(q[s], p[s], scores[s]), len(range(10)[s]), 10) for s in parts)
    expected = (7 * cosent(q[:7], p[:7], scores[:7]) + 3 * cosent(q[7:], p[7:], scores[7:])) / 10
    assert torch.allclose(got, expected)
    with pytest.raises(ValueError, match=r"expected \(4,\) per-example losses"):
        step_share(mnrl, mnrl(q, p).mean(), 4, 8)
    with pytest.raises(TypeError, match="per_example"):
        step_share(nn.MSELoss(), torch.tensor(1.0), 4, 8)


# -- learnability -------------------------------------------------------------------------------------


def _views(n, latent, nuisance, g):
    """Two noisy views of shared latent codes, padded with high-variance nuisance coordinates."""
    z = torch.randn(n, latent, generator=g)

    def view():
        signal = z + 0.3 * torch.randn(n, latent, generator=g)
        return torch.cat([signal, 3.0 * torch.randn(n, nuisance, generator=g)], dim=1)

    return view(), view()


def _in_batch_accuracy(encoder, q, p):
    with torch.no_grad():
        sim = nn.functional.normalize(encoder(q), dim=-1) @ nn.functional.normalize(encoder(p), dim=-1).T
    return float((sim.argmax(1) == torch.arange(len(q))).float().mean())


def test_a_linear_encoder_learns_toy_retrieval_with_mnrl():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    latent, nuisance = 16, 24
    encoder = nn.Linear(latent + nuisance, 16, bias=False)
    test_q, test_p = _views(64, latent, nuisance, g)
    before = _in_batch_accuracy(encoder, test_q, test_p)
    loss_fn = MultipleNegativesRankingLoss()
    opt = torch.optim.Adam(encoder.parameters(), lr=1e-2)
    for _ in range(300):
        q, p = _views(32, latent, nuisance, g)
        loss = step_share(loss_fn, loss_fn(encoder(q), encoder(p)), 32, 32)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = _in_batch_accuracy(encoder, test_q, test_p)
    assert before < 0.6 and after > 0.9, (before, after)
