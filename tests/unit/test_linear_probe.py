"""The linear probe: its solver against scikit-learn, its fit on fixed features, and the method registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import headstart.methods.registry as registry
from headstart.backbones.base import Backbone
from headstart.catalog import BackboneSpec
from headstart.data import Dataset
from headstart.errors import BadInput
from headstart.methods import METHODS, FitContext, LinearProbe, Method, get_method, register_method
from headstart.methods.linear_probe import LinearProbeConfig, fit_logistic_regression, lbfgs


def _problem(n=60, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1.5, (k, d))
    y = rng.integers(0, k, n)
    x = centers[y] + rng.normal(0, 1.0, (n, d))
    return x, y


@pytest.mark.parametrize(("C", "seed"), [(0.1, 0), (1.0, 1), (10.0, 2)])
def test_matches_sklearn_logistic_regression(C, seed):
    x, y = _problem(seed=seed)
    w, b = fit_logistic_regression(torch.tensor(x, dtype=torch.float64), torch.tensor(y), 3, C, max_iter=500)
    ref = LogisticRegression(C=C, tol=1e-10, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(w.numpy(), ref.coef_, atol=1e-3)
    # the intercepts of a softmax are defined up to a shared shift
    np.testing.assert_allclose(b.numpy() - b.numpy().mean(), ref.intercept_ - ref.intercept_.mean(), atol=1e-3)
    logits = torch.tensor(x) @ w.T + b
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), ref.predict_proba(x), atol=1e-4)


def test_warm_start_reaches_the_same_solution():
    x, y = _problem(seed=3)
    xt, yt = torch.tensor(x, dtype=torch.float64), torch.tensor(y)
    cold = fit_logistic_regression(xt, yt, 3, 1.0, max_iter=500)
    init = fit_logistic_regression(xt, yt, 3, 0.01, max_iter=500)
    warm = fit_logistic_regression(xt, yt, 3, 1.0, max_iter=500, init=init)
    np.testing.assert_allclose(warm[0].numpy(), cold[0].numpy(), atol=1e-3)


def test_lbfgs_minimises_a_quadratic():
    a = torch.tensor([[3.0, 1.0], [1.0, 2.0]], dtype=torch.float64)
    target = torch.tensor([1.0, -2.0], dtype=torch.float64)

    def objective(theta):
        r = theta - target
        return float(0.5 * r @ a @ r), a @ r

    theta = lbfgs(objective, torch.zeros(2, dtype=torch.float64), max_iter=100)
    np.testing.assert_allclose(theta.numpy(), target.numpy(), atol=1e-6)


# -- the method on fixed features --------------------------------------------------------------


class TableBackbone(Backbone):
    """A stand-in backbone: each text's features come from a lookup table (no model)."""

    modality = "text"

    def __init__(self, table: dict[str, np.ndarray]):
        spec = BackboneSpec(name="table", modality="text", family="table", source_kind="local", source="-", params=123)
        super().__init__(spec, path=None)
        self.table = table
        self.embedded: list[str] = []

    def load(self):
        return self

    @property
    def feature_dim(self) -> int:
        return len(next(iter(self.table.values())))

    def prepare(self, inputs):
        return list(inputs)

    def cost(self, prepared):
        return 1

    def collate(self, prepared):
        raise NotImplementedError

    def forward_features(self, batch):
        raise NotImplementedError

    def embed(self, inputs, *, precision="fp32", desc=""):
        self.embedded.extend(inputs)
        return np.stack([self.table[t] for t in inputs]).astype(np.float32)


@pytest.fixture
def blobs():
    x, y = _problem(n=90, d=4, k=3, seed=4)
    texts = [f"example {i}" for i in range(len(y))]
    classes = ["a", "b", "c"]
    table = {t: x[i] * 10 + 5 for i, t in enumerate(texts)}  # badly scaled and shifted on purpose
    labels = [classes[i] for i in y]
    ds = Dataset(inputs=texts, labels=labels, modality="text", source="blobs")
    train, val = ds.subset(range(0, 70)), ds.subset(range(70, 90))
    ctx = FitContext(backbone_hash="f" * 64, precision="fp32", seed=0, classes=classes)
    return TableBackbone(table), train, val, ctx, x, y


def test_fit_chooses_C_and_reports(blobs):
    bb, train, val, ctx, x, y = blobs
    probe = LinearProbe()
    summary = probe.fit(bb, train, val, ctx)
    assert summary["C"] in LinearProbeConfig().Cs
    assert set(summary["val_accuracy_by_C"]) <= {f"{c:g}" for c in LinearProbeConfig().Cs}
    assert summary["trainable_params"] == 3 * (4 + 1)
    assert summary["frozen_params"] == 123
    assert summary["examples_encoded"] == 90 and summary["examples_from_cache"] == 0
    assert probe.resolved_config()["C"] == summary["C"]
    assert isinstance(probe.resolved_config()["Cs"], list)
    state = probe.state_dict()
    assert set(state) == {"head.weight", "head.bias"}
    assert state["head.weight"].shape == (3, 4) and state["head.bias"].shape == (3,)


def test_fit_learns_and_the_head_applies_to_raw_features(blobs):
    bb, train, val, ctx, x, y = blobs
    probe = LinearProbe(LinearProbeConfig(C=1.0, max_iter=300))
    summary = probe.fit(bb, train, val, ctx)
    assert summary["val_accuracy_by_C"] == {}  # C given: no grid search
    both = Dataset.concat(train, val)
    probs = probe.predict_proba(bb, both, ctx)
    assert probs.shape == (90, 3)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (probs.argmax(1) == y).mean() >= 0.8
    # The saved head works on raw (unstandardised) features: same as sklearn on standardised ones.
    raw = np.stack([bb.table[t] for t in both.inputs])
    mean, std = raw[:70].mean(0), raw[:70].std(0)
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit((raw - mean) / std, y)
    np.testing.assert_allclose(probs, ref.predict_proba((raw - mean) / std), atol=2e-3)


def test_second_fit_encodes_nothing(blobs):
    bb, train, val, ctx, *_ = blobs
    LinearProbe().fit(bb, train, val, ctx)
    bb.embedded.clear()
    summary = LinearProbe().fit(bb, train, val, ctx)
    assert bb.embedded == []
    assert summary["examples_encoded"] == 0 and summary["examples_from_cache"] == 90


def test_refit_false_trains_on_train_only(blobs):
    bb, train, val, ctx, *_ = blobs
    with_val = LinearProbe(LinearProbeConfig(C=1.0, refit=True, max_iter=200))
    without = LinearProbe(LinearProbeConfig(C=1.0, refit=False, max_iter=200))
    with_val.fit(bb, train, val, ctx)
    without.fit(bb, train, val, ctx)
    assert not torch.allclose(with_val.state_dict()["head.weight"], without.state_dict()["head.weight"])


def test_state_round_trip(blobs):
    bb, train, val, ctx, *_ = blobs
    probe = LinearProbe(LinearProbeConfig(C=1.0))
    probe.fit(bb, train, val, ctx)
    again = LinearProbe.from_options(probe.resolved_config())
    again.load_state_dict({k: v.clone() for k, v in probe.state_dict().items()})
    np.testing.assert_array_equal(again.predict_proba(bb, val, ctx), probe.predict_proba(bb, val, ctx))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"C": 0}, "C must be a number > 0"),
        ({"C": -1.0}, "C must be a number > 0"),
        ({"Cs": ()}, "Cs must be a list of numbers > 0"),
        ({"Cs": (1.0, -1.0)}, "Cs must be a list of numbers > 0"),
        ({"max_iter": 0}, "max_iter"),
        ({"select_iter": 1.5}, "select_iter"),
        ({"patience": 0}, "patience"),
    ],
)
def test_config_validation(options, match):
    with pytest.raises(BadInput, match=match):
        LinearProbe.from_options(options).config.validate()


def test_unknown_option_suggests_close_name():
    with pytest.raises(BadInput, match="no option 'max_iters'. Did you mean 'max_iter'"):
        LinearProbe.from_options({"max_iters": 3})


# -- registry ----------------------------------------------------------------------------------


def test_registry_has_linear_probe():
    assert METHODS["linear-probe"] is LinearProbe
    assert get_method("linear-probe") is LinearProbe


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="registered twice"):
        register_method(LinearProbe)
    assert METHODS["linear-probe"] is LinearProbe


def test_unknown_method_suggests_close_names():
    with pytest.raises(BadInput, match="unknown method 'linear_probe'. Did you mean 'linear-probe'") as err:
        get_method("linear_probe")
    assert "Available: linear-probe" in str(err.value)
    with pytest.raises(BadInput, match="unknown method 'prompt-tuning'") as err:
        get_method("prompt-tuning")
    assert "Did you mean" not in str(err.value)


def test_registering_a_new_method(monkeypatch):
    monkeypatch.setattr(registry, "METHODS", dict(registry.METHODS))

    class Nothing(Method):
        name = "nothing"
        config_cls = LinearProbeConfig

        def fit(self, backbone, train, val, ctx):
            return {}

        def predict_proba(self, backbone, data, ctx):
            return np.zeros((len(data), len(ctx.classes)))

        def state_dict(self):
            return {}

        def load_state_dict(self, tensors):
            pass

        def resolved_config(self):
            return {}

    register_method(Nothing)
    assert registry.get_method("nothing") is Nothing
    with pytest.raises(ValueError):
        register_method(Nothing)


def test_the_head_fit_bar_moves_within_each_fit_and_ends_full(monkeypatch):
    """The 'choosing C' bar counted whole fits and sat at 0 through a long first fit: it now counts
    L-BFGS iterations, and reaches its total whatever converged or stopped early."""
    import io
    import re

    from tqdm import tqdm

    from headstart.methods import linear_probe as lp

    out = io.StringIO()
    bars = []

    def recording(total, desc, unit="it"):
        bars.append(tqdm(total=total, desc=desc, unit=unit, file=out, mininterval=0, miniters=1, disable=False))
        return bars[-1]

    monkeypatch.setattr(lp, "progress", recording)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 8, generator=g)
    y = (x[:, 0] > 0).long()
    lp.fit_probe_head(x, y, 90, 2, lp.LinearProbeConfig())
    (bar,) = bars
    counts = [int(m) for m in re.findall(r"\| *(\d+)/\d+ ", out.getvalue())]
    assert bar.n == bar.total and counts[-1] == bar.total
    assert len(set(counts)) > len(lp.LinearProbeConfig().Cs) + 2  # moved inside fits, not once per C
