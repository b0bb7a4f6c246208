"""`headstart serve`: a real uvicorn server on a free 127.0.0.1 port, hit by a real HTTP client
(httpx), over tiny random runs: answers equal the run's own, validation answers 4xx naming the
field (never a 5xx), micro-batching gathers concurrent requests, metrics, readiness, shutdown."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra (FastAPI + uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (FastAPI + uvicorn) is not installed")
httpx = pytest.importorskip("httpx", reason="httpx (the test client) is not installed")

import headstart as hs  # noqa: E402
from headstart.serve.app import ServeSettings  # noqa: E402
from headstart.serve.server import bind, open_models  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_bert, data_helpers, retrieval_helpers):
    """A classification run (linear probe) and a retrieval run (frozen) on the tiny BERT, and an
    index built with the retrieval run."""
    sentiment_rows, write_table = data_helpers
    root = tmp_path_factory.mktemp("serve")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_HOME", str(root / "home"))
        mp.setenv("HEADSTART_PROGRESS", "0")
        mp.delenv("HEADSTART_STORE", raising=False)
        store = root / "store.sqlite3"
        clf = hs.adapt(write_table(root / "train.csv", sentiment_rows(40)), backbone=str(tiny_bert), out=root / "runs",
                       store=store)
        pairs = write_table(root / "pairs.csv", retrieval_helpers(per_topic=4), ("query", "positive"))
        ret = hs.adapt(pairs, task="retrieval", method="frozen", backbone=str(tiny_bert), out=root / "runs", store=store)
        corpus = root / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n"
                                  for i, t in enumerate(["good movie great film", "bad food awful price", "my card delivery"])))
        from headstart.cli import main

        assert main(["index", str(ret.path), str(corpus), "--out", str(root / "faq-index"), "--quiet"]) == 0
        yield {"clf": clf, "ret": ret, "index": root / "faq-index", "store": store, "root": root}


@pytest.fixture(scope="module")
def server(runs, http_server):
    served = open_models([str(runs["clf"].path), str(runs["ret"].path)], store=runs["store"], threads=1,
                         indexes=[str(runs["index"])])
    with http_server(served, ServeSettings(max_batch=16, max_wait_ms=20, max_inputs=8, max_request_bytes=64 * 1024)) as s:
        yield s


def post(server, route, body, **kw):
    return httpx.post(server.url + route, json=body, timeout=30, **kw)


# -- answers -----------------------------------------------------------------------------------


def test_predict_answers_what_the_run_predicts(server, runs):
    texts = ["good movie", "awful food", "my card was great"]
    r = post(server, "/v1/predict", {"inputs": texts})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == runs["clf"].id
    expected = runs["clf"].predict(texts)
    got = np.array([[p["probabilities"][c] for c in expected.classes] for p in body["predictions"]])
    np.testing.assert_allclose(got, expected.probabilities, atol=1e-5)
    assert [p["label"] for p in body["predictions"]] == expected.labels
    one = post(server, "/v1/predict", {"inputs": "good movie"}).json()  # one item, not a list
    assert len(one["predictions"]) == 1 and one["predictions"][0] == body["predictions"][0]


def test_embed_and_search_answer_what_the_run_gives(server, runs):
    ret = runs["ret"]
    r = post(server, "/v1/embed", {"inputs": ["good film", "card"], "role": "document"})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["embeddings"]), ret.embed(["good film", "card"], role="document"), atol=1e-5)
    hits = post(server, "/v1/search", {"queries": ["good movie great film"], "k": 2}).json()["results"][0]["hits"]
    expected = ret.search(runs["index"], "good movie great film", k=2)
    assert [h["id"] for h in hits] == expected.ids and hits[0]["text"] == "good movie great film"
    np.testing.assert_allclose([h["score"] for h in hits], expected.scores, atol=1e-5)


def test_health_ready_models_openapi(server, runs):
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    models = {m["id"]: m for m in httpx.get(server.url + "/v1/models").json()["models"]}
    assert [v["name"] for v in models[runs["clf"].id]["verbs"]] == ["predict"]
    assert [v["name"] for v in models[runs["ret"].id]["verbs"]] == ["embed", "search"]
    schema = httpx.get(server.url + "/openapi.json").json()
    assert {"/v1/predict", "/v1/embed", "/v1/search", "/health", "/ready", "/metrics"} <= set(schema["paths"])
    request = schema["components"]["schemas"]["EmbedRequest"]["properties"]
    assert set(request) == {"model", "inputs", "role"}


# -- bad input: 4xx naming the field, never a 5xx ----------------------------------------------


@pytest.mark.parametrize("route, body, status, field, needle", [
    ("/v1/predict", {}, 422, "inputs", "required"),
    ("/v1/predict", {"inputs": []}, 422, "inputs", "at least 1"),
    ("/v1/predict", {"inputs": ["ok", ""]}, 422, "inputs[1]", "at least 1 character"),
    ("/v1/predict", {"inputs": ["ok", "   "]}, 422, "inputs[1]", "whitespace"),
    ("/v1/predict", {"inputs": [3]}, 422, "inputs[0]", "string"),
    ("/v1/predict", {"inputs": ["a"] * 9}, 422, "inputs", "at most 8"),
    ("/v1/predict", {"inputs": ["a"], "temperature": 1}, 422, "temperature", "unknown field"),
    ("/v1/predict", {"inputs": ["a"], "model": "nope"}, 404, "model", "no served run 'nope'"),
    ("/v1/embed", {"inputs": ["a"], "role": "passage"}, 422, "role", "'query' or 'document'"),
    ("/v1/search", {"queries": ["a"], "k": 0}, 422, "k", "greater than or equal to 1"),
    ("/v1/search", {"queries": ["a"], "k": "5"}, 422, "k", "integer"),
    ("/v1/search", {"queries": ["a"], "index": "other"}, 422, "queries", "no index 'other'"),
])
def test_bad_requests_get_a_4xx_naming_the_field(server, route, body, status, field, needle):
    r = post(server, route, body)
    assert r.status_code == status, r.text
    err = r.json()
    assert err["field"] == field and needle in err["error"], err


def test_malformed_json_oversized_body_and_unknown_route(server):
    r = httpx.post(server.url + "/v1/predict", content=b'{"inputs": [', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"] == "body" and "JSON" in r.json()["error"]
    big = post(server, "/v1/predict", {"inputs": ["x" * 70_000]})
    assert big.status_code == 413 and big.json()["field"] == "body" and "65536 bytes" in big.json()["error"]

    def chunks():  # no content-length: the limit still holds while the body streams in
        for _ in range(20):
            yield b"x" * 8192

    streamed = httpx.post(server.url + "/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    missing = httpx.get(server.url + "/v1/nothing")
    assert missing.status_code == 404 and "no such route" in missing.json()["error"]
    assert httpx.get(server.url + "/v1/predict").status_code == 405


# -- micro-batching and metrics ----------------------------------------------------------------


def test_concurrent_requests_share_batches_and_get_their_own_answers(server, runs):
    texts = [f"good movie {i}" if i % 2 else f"awful food {i}" for i in range(24)]

    async def fire():
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/v1/predict", json={"inputs": [t]}) for t in texts))

    answers = asyncio.run(fire())
    assert all(a.status_code == 200 for a in answers)
    expected = runs["clf"].predict(texts).labels
    assert [a.json()["predictions"][0]["label"] for a in answers] == expected
    metrics = httpx.get(server.url + "/metrics").text
    model = runs["clf"].id
    count = float(re.search(rf'headstart_batch_items_count{{model="{model}",verb="predict"}} (\S+)', metrics).group(1))
    total = float(re.search(rf'headstart_batch_items_sum{{model="{model}",verb="predict"}} (\S+)', metrics).group(1))
    assert total >= 24 and total / count > 1.5, (total, count)  # batches held more than one request
    assert re.search(r'headstart_requests_total{route="/v1/predict",status="200"} \d+', metrics)
    assert re.search(r'headstart_request_seconds_bucket{route="/v1/predict",le="\+Inf"} \d+', metrics)
    assert re.search(r"process_resident_memory_bytes \d+", metrics)
    assert 'headstart_errors_total{route="/v1/predict",kind="bad_input"}' in metrics


def test_without_batching_every_request_is_its_own_call(runs, http_server):
    served = open_models([str(runs["clf"].path)], store=runs["store"], threads=1, indexes=[])
    with http_server(served, ServeSettings(max_batch=1, max_wait_ms=0)) as s:
        async def fire():
            async with httpx.AsyncClient(base_url=s.url, timeout=30) as client:
                return await asyncio.gather(*(client.post("/v1/predict", json={"inputs": ["good"]}) for _ in range(10)))

        assert all(a.status_code == 200 for a in asyncio.run(fire()))
        metrics = httpx.get(s.url + "/metrics").text
        assert f'headstart_batch_items_sum{{model="{runs["clf"].id}",verb="predict"}} 10' in metrics
        assert f'headstart_batch_items_count{{model="{runs["clf"].id}",verb="predict"}} 10' in metrics


def test_one_bad_item_fails_only_its_own_request(runs):
    """A verb that refuses an item (BadInput) inside a shared batch: the batch is re-run per request."""
    from headstart.serve.batching import MicroBatcher
    from headstart.errors import BadInput

    def call(verb, items, params):
        if "bad" in items:
            raise BadInput("an item the model refuses")
        return [x.upper() for x in items]

    batcher = MicroBatcher(call, max_batch=16, max_wait_s=0.05, max_queue=100, threads=1, name="t")
    batcher.start()

    async def fire():
        return await asyncio.gather(*(batcher.submit("v", [x], {}) for x in ["a", "bad", "c"]), return_exceptions=True)

    a, bad, c = asyncio.run(fire())
    batcher.close()
    assert a == ["A"] and c == ["C"] and isinstance(bad, BadInput)


def test_a_full_queue_refuses_with_503_and_retry_after(runs):
    from headstart.serve.batching import Busy, MicroBatcher

    gate = threading.Event()
    batcher = MicroBatcher(lambda v, items, p: (gate.wait(10), items)[1], max_batch=1, max_wait_s=0, max_queue=2,
                           threads=1, name="t")
    batcher.start()

    async def fire():
        first = asyncio.ensure_future(batcher.submit("v", ["a"], {}))
        await asyncio.sleep(0.1)  # the worker holds "a"; two more fill the queue
        queued = [asyncio.ensure_future(batcher.submit("v", [x], {})) for x in "bc"]
        await asyncio.sleep(0.05)
        with pytest.raises(Busy):
            await batcher.submit("v", ["d"], {})
        gate.set()
        return await asyncio.gather(first, *queued)

    assert asyncio.run(fire()) == [["a"], ["b"], ["c"]]
    batcher.close()


# -- the command line: a real process, SIGTERM lets a request in flight finish ----------------


def test_cli_serves_until_sigterm_and_finishes_the_request_in_flight(runs, tmp_path):
    env = {**os.environ, "HEADSTART_HOME": str(runs["root"] / "home"), "HEADSTART_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "headstart.cli", "serve", str(runs["clf"].path), "--port", "0",
                             "--store", str(runs["store"]), "--max-wait-ms", "1000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = proc.stdout.readline()
        if not first:
            pytest.fail(f"the server did not start: {proc.stderr.read()}")
        assert first.startswith(f"serving run {runs['clf'].id} (classification): /v1/predict"), first
        second = proc.stdout.readline()
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+)", second).group(1)
        deadline = time.time() + 60
        while httpx.get(url + "/ready", timeout=5).status_code != 200:
            assert time.time() < deadline, "not ready in 60 s"
            time.sleep(0.1)
        result = {}

        def slow():  # waits 1 s for batch-mates: still in flight when SIGTERM arrives
            result["r"] = httpx.post(url + "/v1/predict", json={"inputs": ["good movie"]}, timeout=30)

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.4)
        proc.send_signal(signal.SIGTERM)
        t.join(30)
        assert result["r"].status_code == 200 and result["r"].json()["predictions"][0]["label"] in ("pos", "neg")
        assert proc.wait(30) == 0
        assert "stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_cli_refuses_a_taken_port_and_a_foreign_index_in_one_line(cli, runs, assert_bad_input):
    sock = bind("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        assert_bad_input(cli("serve", runs["clf"].path, "--port", port, "--store", runs["store"]), f"--port {port}", "in use")
    finally:
        sock.close()
    assert_bad_input(cli("serve", runs["clf"].path, "--index", runs["index"], "--store", runs["store"]), "--index", "not served")
    assert_bad_input(cli("serve", runs["clf"].path, "--max-batch", "0"), "--max-batch")
    assert_bad_input(cli("serve", "no-such-run"), "no-such-run")


def test_base64_items_are_decoded_by_their_magic_bytes(tmp_path):
    from headstart.errors import BadInput
    from headstart.tasks.verbs import decoded_files

    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"0" * 10).decode()
    with decoded_files([png], "image") as paths:
        assert Path(paths[0]).suffix == ".png" and Path(paths[0]).read_bytes().startswith(b"\x89PNG")
    assert not Path(paths[0]).exists()
    with pytest.raises(BadInput, match="item 0: not base64"):
        with decoded_files(["not base64!"], "audio"):
            pass
    with pytest.raises(BadInput, match="item 0: not a audio file"):
        with decoded_files([base64.b64encode(b"hello world").decode()], "audio"):
            pass


def test_random_malformed_bodies_never_get_a_5xx(server):
    """Fields of every JSON type, missing, extra or nested, on every route: always a 2xx or a 4xx."""
    import random

    rng = random.Random(0)
    values = [None, True, 0, -1, 1.5, "", " ", "x", "good movie", [], [""], ["good"], [1, 2], [[]], {}, {"a": 1},
              [{"role": "user"}], "é" * 50, ["a"] * 9, 10 ** 30]
    fields = ["inputs", "queries", "role", "k", "index", "model", "extra", "prompts"]
    statuses = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(150):
            route = rng.choice(["/v1/predict", "/v1/embed", "/v1/search"])
            body = {f: rng.choice(values) for f in rng.sample(fields, rng.randint(0, 3))}
            r = client.post(route, json=rng.choice([body, rng.choice(values)]))
            assert r.status_code < 500, (route, body, r.status_code, r.text)
            assert r.status_code < 300 or ("error" in r.json() and "field" in r.json()), r.text
            statuses.append(r.status_code)
    assert 422 in statuses and 200 in statuses


def test_cli_json_announces_the_url_and_routes(runs):
    env = {**os.environ, "HEADSTART_HOME": str(runs["root"] / "home"), "HEADSTART_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "headstart.cli", "serve", str(runs["ret"].path), "--index", str(runs["index"]),
                             "--port", "0", "--store", str(runs["store"]), "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        if not line:
            pytest.fail(f"the server did not start: {proc.stderr.read()}")
        announced = json.loads(line)
        assert announced["routes"] == ["/v1/embed", "/v1/search"]
        assert announced["models"][0]["indexes"] == ["faq-index"] and announced["url"].startswith("http://127.0.0.1:")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_onnx_exports_serve_what_the_runs_give(runs, http_server, tmp_path):
    """An ONNX export folder in place of a run: ONNX Runtime answers predict, embed and search
    (with the run's index: the export carries the run's producer) within the export tolerance."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from headstart.export import export_run

    export_run(runs["clf"], tmp_path / "clf-onnx", format="onnx")
    export_run(runs["ret"], tmp_path / "ret-onnx", format="onnx")
    served = open_models([str(tmp_path / "clf-onnx"), str(tmp_path / "ret-onnx")], store=runs["store"], threads=1,
                         indexes=[str(runs["index"])])
    assert [s.kind for s in served] == ["onnx", "onnx"] and [s.id for s in served] == [runs["clf"].id, runs["ret"].id]
    texts = ["good movie", "awful food"]
    with http_server(served, ServeSettings(max_wait_ms=1)) as s:
        got = httpx.post(s.url + "/v1/predict", json={"inputs": texts}, timeout=30).json()["predictions"]
        expected = runs["clf"].predict(texts)
        np.testing.assert_allclose([[p["probabilities"][c] for c in expected.classes] for p in got], expected.probabilities,
                                   atol=1e-4)
        emb = httpx.post(s.url + "/v1/embed", json={"inputs": texts}, timeout=30).json()["embeddings"]
        np.testing.assert_allclose(emb, runs["ret"].embed(texts), atol=1e-4)
        hits = httpx.post(s.url + "/v1/search", json={"queries": "my card delivery", "k": 1}, timeout=30).json()
        assert hits["results"][0]["hits"][0]["id"] == runs["ret"].search(runs["index"], "my card delivery", k=1).ids[0]
        models = httpx.get(s.url + "/v1/models").json()["models"]
        assert {m["kind"] for m in models} == {"onnx"}


def test_served_predictions_bypass_the_feature_cache(server, monkeypatch):
    """A server's inputs rarely repeat: the linear probe computes features instead of reading and
    growing the on-disk cache with every request."""
    from headstart.methods import linear_probe

    def no_cache(*a, **k):
        raise AssertionError("the feature cache was used while serving")

    monkeypatch.setattr(linear_probe, "frozen_features", no_cache)
    r = post(server, "/v1/predict", {"inputs": ["a text never seen before good"]})
    assert r.status_code == 200, r.text


def test_an_image_run_predicts_base64_images(tmp_path, image_folder, flat_images, tiny_vit, http_server):
    """An image classification run over HTTP: the images travel base64-encoded in `inputs`."""
    from headstart.serve.models import ServedRun

    run = hs.adapt(image_folder, backbone=str(tiny_vit), out=tmp_path / "runs")
    folder, _ = flat_images
    files = sorted(folder.glob("*.png"))
    with http_server([ServedRun(run)], ServeSettings(max_wait_ms=1)) as s:
        r = httpx.post(s.url + "/v1/predict", json={"inputs": [base64.b64encode(f.read_bytes()).decode() for f in files]},
                       timeout=30)
        assert r.status_code == 200, r.text
        assert [p["label"] for p in r.json()["predictions"]] == run.predict([str(f) for f in files]).labels
        bad = httpx.post(s.url + "/v1/predict", json={"inputs": [base64.b64encode(b"plain text, not an image").decode()]},
                         timeout=30)
        assert bad.status_code == 422 and "item 0" in bad.json()["error"] and bad.json()["field"] == "inputs"


def test_limits_on_the_command_line_are_checked_in_one_line(cli, runs, assert_bad_input):
    for flag, value in (("--max-request-mb", "0"), ("--max-inputs", "0"), ("--max-wait-ms", "5000"), ("--threads", "0"),
                        ("--port", "70000"), ("--graceful-s", "-1")):
        assert_bad_input(cli("serve", runs["clf"].path, flag, value, "--store", runs["store"]), flag)


def test_a_damaged_onnx_export_is_one_line(cli, runs, tmp_path, assert_bad_input):
    pytest.importorskip("onnxruntime")
    folder = tmp_path / "broken-onnx"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"not an onnx graph")
    (folder / "headstart.json").write_text("{ not json")
    assert_bad_input(cli("serve", folder, "--store", runs["store"]), "broken-onnx", "not a readable ONNX export")
    (folder / "headstart.json").write_text(json.dumps({"task": "classification", "source_run": "x", "output": "probabilities"}))
    assert_bad_input(cli("serve", folder, "--store", runs["store"]), "broken-onnx", "not a readable ONNX export")
