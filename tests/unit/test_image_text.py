"""The image-text task on tiny random dual encoders: a CLIP, a SigLIP and a locked-image pair of a
tiny ViT and a tiny BERT (``pair:VIT+BERT``), on images whose colour is their caption."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import headstart as hs
from headstart.errors import BadInput, RunIntegrityError
from headstart.tasks.image_text import contrastive_loss, first_relevant_ranks, ranking_set

COLOURS = {"red": 0, "green": 1, "blue": 2}
FAST = {"epochs": 6, "batch_size": 12, "patience": 100}


@pytest.fixture(scope="module")
def colours(tmp_path_factory, image_maker):
    """red/ green/ blue/ folders of 14 noisy 32-px images each, and a pairs table over them."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    rows = []
    for label, channel in COLOURS.items():
        for i in range(14):
            image_maker(root / "folder" / label / f"{label}{i:02d}.png", channel, rng)
            rows.append((f"folder/{label}/{label}{i:02d}.png", f"a {'big' if i % 2 else 'small'} {label} thing"))
    with open(root / "pairs.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows(rows)
    return root


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    from headstart.backbones.testing import tiny_image_model, tiny_text_model

    root = tmp_path_factory.mktemp("towers")
    return tiny_image_model(root / "vit"), tiny_text_model(root / "bert"), tiny_text_model(root / "bert2", seed=1)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from headstart.backbones.testing import tiny_clip_model

    return tiny_clip_model(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture(scope="module")
def tiny_siglip(tmp_path_factory):
    from headstart.backbones.testing import tiny_siglip_model

    return tiny_siglip_model(tmp_path_factory.mktemp("siglip") / "siglip")


def pair(towers, text: int = 1) -> str:
    return f"pair:{towers[0]}+{towers[text]}"


def adapt(data, backbone, method, tmp_path, **kw):
    opts = kw.pop("method_options", FAST if method != "frozen" else {})
    return hs.adapt(data, task="image-text", backbone=backbone, method=method, method_options=opts,
                    out=tmp_path / "runs", store=tmp_path / "store.sqlite3", **kw)


# -- metrics and loss, by hand ----------------------------------------------------------------------


def test_recall_ranks_by_hand():
    sim = np.array([[0.9, 0.1, 0.5],   # image 0: relevant text 0 is first
                    [0.2, 0.3, 0.8],   # image 1: relevant text 1 is second (text 2 beats it)
                    [0.7, 0.6, 0.1]])  # image 2: relevant texts {1, 2}: the better of them (1) is second
    assert first_relevant_ranks(sim, [{0}, {1}, {1, 2}]).tolist() == [1, 2, 2]
    tied = np.array([[0.5, 0.5]])
    assert first_relevant_ranks(tied, [{1}]).tolist() == [1]  # ties: only strictly higher scores rank above


def test_infonce_is_clips_loss_when_every_pair_is_distinct():
    from transformers.models.clip.modeling_clip import image_text_contrastive_loss

    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(7.0)
    ours = contrastive_loss(img, txt, torch.eye(5, dtype=torch.bool), scale, None, "infonce")
    logits = scale * txt @ img.T  # what CLIPModel(return_loss=True) computes over logits_per_text
    assert torch.allclose(ours, image_text_contrastive_loss(logits), atol=1e-6)
    # Two images sharing one caption: each direction averages over the positives.
    positive = torch.tensor([[True, False], [True, False], [False, True]])
    lg = scale * img[:3] @ txt[:2].T
    i2t = -torch.log_softmax(lg, 1)[[0, 1, 2], [0, 0, 1]].mean()
    lt = torch.log_softmax(lg.T, 1)
    t2i = (-(lt[0, 0] + lt[0, 1]) / 2 - lt[1, 2]) / 2
    assert torch.allclose(contrastive_loss(img[:3], txt[:2], positive, scale, None, "infonce"), (i2t + t2i) / 2, atol=1e-6)


def test_sigmoid_loss_is_siglips():
    torch.manual_seed(1)
    img = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    scale, bias = torch.tensor(10.0), torch.tensor(-5.0)
    logits = txt @ img.T * scale + bias  # transformers' SiglipModel.forward, return_loss=True
    eye = torch.eye(4)
    reference = -torch.sum(torch.nn.functional.logsigmoid((2 * eye - 1) * logits)) / 4
    assert torch.allclose(contrastive_loss(img, txt, torch.eye(4, dtype=torch.bool), scale, bias, "sigmoid"), reference,
                          atol=1e-6)


def test_ranking_set_of_a_class_folder_ranks_every_class_prompt(colours):
    from headstart.data.image_text import read_pairs

    templates = ("a photo of a {label}.", "a {label} picture")
    pairs = read_pairs(colours / "folder", templates=templates)
    assert pairs.captions[0] == "a photo of a blue." and pairs.captions[1] == "a blue picture"  # templates in turn
    ranked = ranking_set(pairs, templates)
    assert len(ranked.texts) == 6 and len(ranked.images) == 42
    blue = [j for j, t in enumerate(ranked.texts) if "blue" in t]
    assert ranked.i2t[0] == set(blue) and all(ranked.labels[i] == "blue" for i in ranked.t2i[blue[0]])


# -- data ---------------------------------------------------------------------------------------------


def test_split_is_by_image_content(colours, tmp_path):
    from headstart.data.image_text import read_pairs, split_by_image

    rows = list(csv.reader(open(colours / "pairs.csv", encoding="utf-8")))[1:]
    copy = tmp_path / "copy.png"
    shutil.copy(colours / rows[0][0], copy)  # the same image under another name, with another caption
    with open(tmp_path / "pairs.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["caption", "path"])
        w.writerows([(cap, str(colours / p)) for p, cap in rows] + [("another caption", str(copy))])
    pairs = read_pairs(tmp_path / "pairs.csv", templates=("{label}",))
    assert pairs.columns == {"image": "path", "caption": "caption"}
    for seed in range(5):
        parts = split_by_image(pairs, val_fraction=0.2, test_fraction=0.2, seed=seed)
        where = [[pairs.image_keys[i] for i in part] for part in parts]
        assert not set(where[0]) & set(where[1]) and not set(where[0]) & set(where[2]) and not set(where[1]) & set(where[2])
        assert sum(len(p) for p in parts) == len(pairs)
        assert {i for i, p in enumerate(parts) if 0 in p} == {i for i, p in enumerate(parts) if len(rows) in p}


def test_bad_pair_tables_are_one_line_naming_the_row(colours, tmp_path, cli, assert_bad_input, towers):
    def table(name, header, rows):
        path = tmp_path / name
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        return path

    img = str(colours / "folder" / "red" / "red00.png")
    cases = [
        (table("empty.csv", ["image", "caption"], [(img, "a red thing"), (img, " ")]), "line 3: empty caption in column 'caption'"),
        (table("missing.csv", ["image", "caption"], [(img, "a red thing"), ("nope.png", "x")]), "does not exist"),
        (table("noimg.csv", ["text", "caption"], [("a", "b"), ("c", "d")]), "no column whose every value names an image file"),
        (table("nocap.csv", ["image", "x", "y"], [(img, "a", "b")]), "no caption column"),
    ]
    for path, needle in cases:
        assert_bad_input(cli("adapt", path, "--task", "image-text", "--backbone", pair(towers), "--out", tmp_path / "o"),
                         needle, out_dir=tmp_path / "o")
    assert_bad_input(cli("adapt", colours / "pairs.csv", "--task", "image-text", "--backbone", pair(towers),
                         "--test", colours / "pairs.csv", "--out", tmp_path / "o"), "test images are also training images")


def test_refusals_name_what_to_use(colours, towers, tiny_clip, tmp_path, cli, assert_bad_input):
    out = tmp_path / "o"
    assert_bad_input(cli("adapt", colours / "folder", "--task", "image-text", "--backbone", towers[0], "--out", out),
                     "needs an image-text dual encoder", "lit-lite0-minilm", out_dir=out)
    assert_bad_input(cli("adapt", colours / "folder", "--task", "image-text", "--backbone", pair(towers), "--method",
                         "frozen", "--out", out), "projections are untrained", "head-only", out_dir=out)
    assert_bad_input(cli("adapt", colours / "folder", "--task", "zero-shot", "--backbone", pair(towers), "--out", out),
                     "untrained image-text pair", out_dir=out)
    assert_bad_input(cli("adapt", colours / "folder", "--task", "image-text", "--backbone", f"pair:{towers[1]}+{towers[0]}",
                         "--out", out), "image tower", out_dir=out)
    assert_bad_input(cli("adapt", colours / "folder", "--task", "image-text", "--backbone", "pair:efficientnet-lite0",
                         "--out", out), "pair:IMAGE+TEXT", out_dir=out)
    assert_bad_input(cli("adapt", colours / "folder", "--task", "image-text", "--backbone", str(tiny_clip), "--method",
                         "linear-probe", "--out", out), "does not adapt for the task 'image-text'", out_dir=out)
    assert_bad_input(cli("adapt", colours / "folder", "--task", "image-text", "--backbone", str(tiny_clip), "--task-set",
                         "towers=left", "--out", out), "towers must be one of", out_dir=out)
    assert_bad_input(cli("adapt", colours / "folder", "--task", "classification", "--backbone", str(tiny_clip), "--method",
                         "head-only", "--out", out), "'head-only' does not adapt for the task 'classification'", out_dir=out)
    assert_bad_input(cli("adapt", colours / "folder", "--task", "image-text", "--backbone", pair(towers), "--method",
                         "scratch", "--out", out), "towers=both", out_dir=out)


# -- the pair -----------------------------------------------------------------------------------------


def test_pair_identity_is_both_towers(towers, tmp_path):
    from headstart.backbones import open_backbone
    from headstart.backbones.dual import pair_identity

    image, text = tmp_path / "vit", tmp_path / "bert"
    shutil.copytree(towers[0], image)
    shutil.copytree(towers[1], text)
    bb, first = open_backbone(f"pair:{image}+{text}")
    assert first == pair_identity(open_backbone(str(image))[1], open_backbone(str(text))[1])
    assert type(bb).__name__ == "LitPairBackbone"
    bb.module  # noqa: B018 - loads both towers
    assert bb.param_count() == sum(p.numel() for p in bb.image_bb.module.parameters()) + sum(
        p.numel() for p in bb.text_bb.module.parameters())
    seen = {first}
    for tower in (image, text):
        weights = tower / "model.safetensors"
        tensors = load_file(str(weights))
        name = next(iter(tensors))
        tensors[name] = tensors[name] + 1
        save_file(tensors, str(weights), metadata={"format": "pt"})
        seen.add(open_backbone(f"pair:{image}+{text}")[1])
    assert len(seen) == 3  # each tower's change is a new identity


def test_head_only_learns_the_colours_on_cached_tower_features(colours, towers, tmp_path, monkeypatch):
    import headstart.tasks.image_text as it

    calls = []
    real = it._run_side
    monkeypatch.setattr(it, "_run_side", lambda side, items, *a, **k: calls.append((side.name, len(items))) or real(side, items, *a, **k))
    run = adapt(colours / "folder", pair(towers), "head-only", tmp_path, method_options={"epochs": 20, "batch_size": 12})
    fit = run.manifest["method"]["fit"]
    assert fit["cached_towers"] == ["image", "text"] and fit["adapted_towers"] == ["text"] and fit["loss"] == "infonce"
    losses = [h["val_loss"] for h in fit["history"]]
    assert losses[-1] < 0.8 * losses[0], losses
    summary = run.metrics["test"]["summary"]
    assert summary["zero_shot_accuracy"] == 1.0 and summary["i2t_recall@1"] == 1.0
    assert summary["recall@1_ci"][0] <= summary["recall@1"] <= summary["recall@1_ci"][1]
    trainable = {k for k in load_file(str(run.path / "weights.safetensors"))}
    assert trainable == {"head.image.weight", "head.text.weight", "head.log_scale"}  # the towers are untouched
    # A second run on the same data encodes nothing: the towers' features are in the cache.
    calls.clear()
    adapt(colours / "folder", pair(towers), "head-only", tmp_path, method_options={"epochs": 1, "batch_size": 12})
    assert calls == [], calls
    # A pair with another text tower re-encodes the captions only: the image tower's features are its own.
    adapt(colours / "folder", pair(towers, text=2), "head-only", tmp_path, method_options={"epochs": 1, "batch_size": 12})
    assert {name for name, _ in calls} == {"text"}, calls
    # predictions.csv: one row per query, both directions.
    rows = list(csv.DictReader(open(run.path / "predictions.csv", encoding="utf-8")))
    assert {r["direction"] for r in rows} == {"image->text", "text->image"}
    assert sum(r["direction"] == "image->text" for r in rows) == summary["images"]


def test_lora_on_the_text_tower_saves_loads_and_refuses_another_base(colours, towers, tmp_path):
    text = tmp_path / "bert"
    shutil.copytree(towers[1], text)
    backbone = f"pair:{towers[0]}+{text}"
    run = adapt(colours / "pairs.csv", backbone, "lora", tmp_path, method_options={**FAST, "lr": 5e-3})
    fit = run.manifest["method"]["fit"]
    assert fit["cached_towers"] == ["image"] and fit["target_count"] > 0
    names = load_file(str(run.path / "weights.safetensors")).keys()
    assert any(".lora_" in n and n.startswith("body.text.") for n in names) and "head.log_scale" in names
    captions, images = ["a big red thing", "a small blue thing"], [str(colours / "folder/red/red00.png")]
    t, i = run.embed_texts(captions), run.embed_images(images)
    assert t.shape == (2, 256) and np.allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    again = hs.load(run.path)
    assert np.allclose(again.embed_texts(captions), t, atol=1e-6) and np.allclose(again.embed_images(images), i, atol=1e-6)
    weights = text / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["embeddings.word_embeddings.weight"] = tensors["embeddings.word_embeddings.weight"] * 0.5
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(RunIntegrityError, match="the base changed"):
        hs.load(run.path).embed_texts(captions)


def test_resume_reaches_the_same_weights(colours, towers, tmp_path):
    opts = {"epochs": 3, "batch_size": 8, "patience": 100, "lr": 5e-3}
    full = adapt(colours / "pairs.csv", pair(towers), "lora", tmp_path / "a", method_options=opts)

    def crash(step: int) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        adapt(colours / "pairs.csv", pair(towers), "lora", tmp_path / "b", method_options=opts, _on_step=crash)
    partial = list((tmp_path / "b" / "runs" / ".partial").iterdir())
    resumed = hs.adapt(None, resume=partial[0].name[:22], out=tmp_path / "b" / "runs", store=tmp_path / "b" / "store.sqlite3")
    assert resumed.manifest["method"]["fit"]["resumed_from_step"] == 5
    a, b = load_file(str(full.path / "weights.safetensors")), load_file(str(resumed.path / "weights.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


# -- CLIP and SigLIP ----------------------------------------------------------------------------------


def test_frozen_clip_embeds_as_transformers_does(colours, tiny_clip, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    from headstart.backbones import open_backbone
    from headstart.backbones.vision import load_image

    run = adapt(colours / "folder", str(tiny_clip), "frozen", tmp_path)
    assert run.manifest["method"]["fit"]["trainable_params"] == 0
    summary = run.metrics["test"]["summary"]
    assert {"i2t_recall@1", "t2i_recall@10", "zero_shot_accuracy", "zero_shot_macro_f1"} <= set(summary)
    paths = [str(colours / "folder/red/red01.png"), str(colours / "folder/blue/blue03.png")]
    texts = ["a red thing", "a blue dog"]
    model, tok = AutoModel.from_pretrained(tiny_clip).eval(), AutoTokenizer.from_pretrained(tiny_clip)
    pre = open_backbone(str(tiny_clip))[0].pre
    with torch.no_grad():
        img = model.get_image_features(pixel_values=torch.from_numpy(np.stack([load_image(p, pre) for p in paths])))
        enc = tok(texts, padding=True, return_tensors="pt")
        txt = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
    unit = lambda x: torch.nn.functional.normalize(x.pooler_output, dim=-1).numpy()  # noqa: E731
    assert np.allclose(run.embed_images(paths), unit(img), atol=1e-5)
    assert np.allclose(run.embed_texts(texts), unit(txt), atol=1e-5)


def test_lora_on_clip_lowers_the_contrastive_loss_on_both_towers(colours, tiny_clip, tmp_path):
    run = adapt(colours / "pairs.csv", str(tiny_clip), "lora", tmp_path,
                method_options={"epochs": 8, "batch_size": 12, "lr": 1e-2, "head_lr": 1e-2, "patience": 100})
    fit = run.manifest["method"]["fit"]
    assert fit["adapted_towers"] == ["image", "text"] and fit["cached_towers"] == []
    losses = [h["val_loss"] for h in fit["history"]]
    assert min(losses[1:]) < losses[0], losses
    names = load_file(str(run.path / "weights.safetensors")).keys()
    assert any(n.startswith("body.image.") for n in names) and any(n.startswith("body.text.") for n in names)


def test_siglip_trains_with_its_sigmoid_loss_and_bias(colours, tiny_siglip, tmp_path):
    run = adapt(colours / "pairs.csv", str(tiny_siglip), "head-only", tmp_path, task_options={"towers": "image"})
    fit = run.manifest["method"]["fit"]
    assert fit["loss"] == "sigmoid" and fit["cached_towers"] == ["image", "text"]
    assert {"head.log_scale", "head.bias"} <= set(load_file(str(run.path / "weights.safetensors")))


def test_finetune_with_one_tower_locks_the_other(colours, tiny_clip, tmp_path):
    run = adapt(colours / "pairs.csv", str(tiny_clip), "finetune", tmp_path, task_options={"towers": "text"},
                method_options={"epochs": 2, "batch_size": 12})
    names = load_file(str(run.path / "weights.safetensors")).keys()
    assert any(n.startswith("body.text.") for n in names) and not any("image" in n.split(".")[1] for n in names
                                                                         if n.startswith("body."))
    assert run.manifest["method"]["fit"]["cached_towers"] == ["image"]


# -- eval, index and search, compare, drift -----------------------------------------------------------


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory, colours, towers):
    out = tmp_path_factory.mktemp("colour-run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_HOME", str(out / "home"))
        mp.setenv("HEADSTART_PROGRESS", "0")
        return adapt(colours / "folder", pair(towers), "head-only", out, method_options={"epochs": 20, "batch_size": 12})


def test_eval_on_unseen_classes_and_search_text_to_images(colour_run, colours, tmp_path, cli, assert_bad_input):
    run = hs.load(colour_run.path, store=colour_run.store.path)
    unseen = tmp_path / "unseen"
    for label in ("red", "blue"):
        shutil.copytree(colours / "folder" / label, unseen / label)
    detail = run.evaluate(unseen)
    assert detail["zero_shot_accuracy"] == 1.0 and detail["images"] == 28 and detail["texts"] == 6
    assert_bad_input(cli("index", colour_run.path, colours / "pairs.csv", "--id-col", "nope", "--out", tmp_path / "bad"),
                     "no column 'nope' for --id-col")
    r = cli("index", colour_run.path, colours / "folder", "--out", tmp_path / "idx")
    assert r.rc == 0, r
    s = cli("search", tmp_path / "idx", "a photo of a green.", "-k", "3", "--run", colour_run.path, "--json")
    assert s.rc == 0, s
    hits = s.json()["hits"]
    assert [h["id"].split("/")[0] for h in hits] == ["green"] * 3
    other = hs.adapt(colours / "folder", task="image-text", backbone=run.manifest["backbone"]["name"], method="head-only",
                     method_options={"epochs": 1}, out=tmp_path / "runs", store=tmp_path / "store.sqlite3")
    with pytest.raises(BadInput, match="embedded by"):
        other.search(tmp_path / "idx", "a red thing")


def test_compare_and_drift_read_image_text_runs(colours, towers, tmp_path, cli):
    r = cli("compare", colours / "folder", "--task", "image-text", "--methods", "head-only,lora", "--backbones",
            pair(towers), "--set", "head-only.epochs=10", "--set", "lora.epochs=3", "--out", tmp_path / "cmp",
            "--runs-out", tmp_path / "runs")
    assert r.rc == 0, r
    assert "Recall@1 [95%]" in r.out, r.out
    saved = json.loads(next((tmp_path / "cmp").glob("*/comparison.json")).read_text())
    assert [m[0] for m in saved["data"]["metrics"]] == ["recall@1", "recall@10"]
    a = cli("adapt", colours / "folder", "--task", "image-text", "--backbone", pair(towers), "--method", "head-only",
            "--out", tmp_path / "runs", "--json")
    assert a.rc == 0, a
    d = cli("drift", a.json()["run"], "--base", pair(towers, text=2), "--out", tmp_path / "runs", "--json")
    assert d.rc in (0, 1), d
    result = d.json()
    assert result["task"] == "image-text" and {c["metric"] for c in result["checks"]} == {"recall@1", "recall@10"}
    assert all(c["n"] == hs.load(a.json()["run"]).metrics["test"]["summary"]["images"]
               + hs.load(a.json()["run"]).metrics["test"]["summary"]["texts"] for c in result["checks"])


def test_served_run_embeds_texts_and_images_and_searches_its_index(colour_run, colours, tmp_path, http_server):
    """Over HTTP on 127.0.0.1: texts and base64 images embed as the run does; text queries find images."""
    import base64

    import httpx

    from headstart.index import VectorIndex
    from headstart.index.build import index_corpus
    from headstart.serve.app import ServeSettings
    from headstart.serve.models import ServedRun

    run = hs.load(colour_run.path, store=colour_run.store.path)
    index_corpus(run, colours / "folder", tmp_path / "images")
    served = ServedRun(run)
    served.attach_index(VectorIndex.open(tmp_path / "images"))
    image = colours / "folder" / "blue" / "blue02.png"
    with http_server([served], ServeSettings(max_wait_ms=1)) as s:
        t = httpx.post(s.url + "/v1/embed-texts", json={"inputs": ["a photo of a red."]}, timeout=30)
        i = httpx.post(s.url + "/v1/embed-images", json={"inputs": [base64.b64encode(image.read_bytes()).decode()]},
                       timeout=30)
        q = httpx.post(s.url + "/v1/search", json={"queries": ["a photo of a blue."], "k": 2}, timeout=30)
    assert t.status_code == i.status_code == q.status_code == 200, (t.text, i.text, q.text)
    assert np.allclose(t.json()["embeddings"][0], run.embed_texts(["a photo of a red."])[0], atol=1e-5)
    assert np.allclose(i.json()["embeddings"][0], run.embed_images([str(image)])[0], atol=1e-5)
    assert [h["id"].split("/")[0] for h in q.json()["results"][0]["hits"]] == ["blue", "blue"]


def test_an_image_text_suite_gates_on_recall_and_zero_shot_accuracy(colour_run, colours, tmp_path, cli):
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: photos\ntask: image-text\ndatasets:\n  - {{name: colours, path: {colours / 'folder'}}}\n"
                     "metrics: [recall@1, zero_shot_accuracy]\ngates:\n  - zero_shot_accuracy >= 0.9\n")
    ok = cli("eval", colour_run.path, "--suite", suite, "--store", colour_run.store.path, "--json")
    assert ok.rc == 0, ok
    cells = ok.json()["datasets"]["colours"]["slices"]["all"]
    assert set(cells) == {"recall@1", "zero_shot_accuracy"} and cells["zero_shot_accuracy"]["value"] == 1.0
    assert cells["recall@1"]["ci"][0] <= cells["recall@1"]["value"] <= cells["recall@1"]["ci"][1]
    strict = tmp_path / "strict.yaml"
    strict.write_text(suite.read_text().replace("zero_shot_accuracy >= 0.9", "zero_shot_accuracy <= 0.5"))
    failed = cli("eval", colour_run.path, "--suite", strict, "--store", colour_run.store.path)
    assert failed.rc == 1 and "FAILED" in failed.out, failed


def test_a_clip_run_exports_as_the_model_the_standard_loaders_read(colours, tiny_clip, towers, tmp_path, cli,
                                                                   assert_bad_input):
    from transformers import AutoModel, pipeline

    run = adapt(colours / "pairs.csv", str(tiny_clip), "lora", tmp_path,
                method_options={"epochs": 3, "batch_size": 12, "lr": 1e-2, "head_lr": 1e-2})
    assert_bad_input(cli("export", run.path, "--out", tmp_path / "x", "--store", tmp_path / "store.sqlite3"), "--merge")
    r = cli("export", run.path, "--out", tmp_path / "x", "--merge", "--store", tmp_path / "store.sqlite3", "--json")
    assert r.rc == 0, r
    record = json.loads((tmp_path / "x" / "headstart.json").read_text())
    assert record["check"]["max_abs_embedding_diff"] <= 1e-4 and record["merged"]
    model = AutoModel.from_pretrained(tmp_path / "x")
    assert type(model).__name__ == "CLIPModel"
    assert abs(float(model.logit_scale.detach()) - float(load_file(str(run.path / "weights.safetensors"))["head.log_scale"])) < 1e-6
    image = str(colours / "folder" / "red" / "red03.png")
    scores = pipeline("zero-shot-image-classification", model=str(tmp_path / "x"))(image, candidate_labels=["red", "blue"])
    assert {s["label"] for s in scores} == {"red", "blue"} and abs(sum(s["score"] for s in scores) - 1) < 1e-5
    lit = adapt(colours / "folder", pair(towers), "head-only", tmp_path)
    assert_bad_input(cli("export", lit.path, "--out", tmp_path / "y", "--store", tmp_path / "store.sqlite3"),
                     "(lit-pair) is not a Hugging Face model", out_dir=tmp_path / "y")


def test_drift_with_a_suite_scores_both_runs_on_classes_of_its_own(colour_run, colours, towers, tmp_path, cli):
    """The run's own test set can miss what a suite of other classes shows: each run scores the
    suite's folder itself and the two are compared query by query."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"name: unseen\ntask: image-text\ndatasets:\n  - {{name: colours, path: {colours / 'folder'}}}\n"
                     "metrics: [zero_shot_accuracy, i2t_recall@1]\n")
    d = cli("drift", colour_run.path, "--base", pair(towers, text=2), "--suite", suite, "--store", colour_run.store.path,
            "--out", tmp_path / "runs", "--report", tmp_path / "report", "--json")
    assert d.rc in (0, 1), d
    checks = {c["metric"]: c for c in d.json()["checks"]}
    assert set(checks) == {"zero_shot_accuracy", "i2t_recall@1"} and {c["dataset"] for c in checks.values()} == {"colours"}
    assert checks["zero_shot_accuracy"]["n"] == 42 and checks["zero_shot_accuracy"]["old"] == 1.0
    assert (tmp_path / "report" / "report.html").is_file()


def test_cli_prints_recall_both_ways_and_a_broken_image_is_one_line(colours, towers, tmp_path, cli, assert_bad_input):
    r = cli("adapt", colours / "folder", "--task", "image-text", "--backbone", pair(towers), "--out", tmp_path / "runs",
            "--store", tmp_path / "store.sqlite3")
    assert r.rc == 0, r
    assert "method head-only" in r.out and "test Recall@1" in r.out and "image->text R@1" in r.out, r.out
    assert "zero-shot accuracy" in r.out and "training pairs" in r.out, r.out
    run_id = next(line.split()[1] for line in r.out.splitlines() if line.startswith("run "))
    e = cli("eval", run_id, colours / "pairs.csv", "--store", tmp_path / "store.sqlite3")
    assert e.rc == 0 and "Recall@1" in e.out and "95% bootstrap" in e.out and "queries" in e.out, e
    # A file that is not an image, named like one: one line naming it, no run folder left.
    bad = tmp_path / "bad"
    shutil.copytree(colours / "folder", bad)
    (bad / "red" / "red05.png").write_bytes(b"not a png at all")
    assert_bad_input(cli("adapt", bad, "--task", "image-text", "--backbone", pair(towers), "--out", tmp_path / "b",
                         "--store", tmp_path / "b.sqlite3"), "red05.png", "cannot read the image", out_dir=tmp_path / "b")
