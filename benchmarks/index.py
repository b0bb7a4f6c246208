"""Vector index: exact search against faiss HNSW (and IVF-Flat, hnswlib) on real MiniLM embeddings.

Corpus: every unique English sentence of banking77 (train + test) and STS-B (stsb_multi_mt en,
train/dev/test, both sides), embedded with the packaged MiniLM-L6 through headstart's own
backbone (``open_backbone("minilm-l6").embed(texts, precision="fp32")``: the mean pooling and
normalisation a retrieval run's index will hold). 1,000 sentences drawn at random are the queries,
the rest (>= 20,000, the issue's floor) the corpus. The embeddings are cached under
``<headstart cache>/benchmarks/`` so reruns only measure the index.

    python benchmarks/index.py [--data ../shared/data] [--threads 1] [--json out.json]

Measures, one thread everywhere (torch, BLAS through numpy, faiss OpenMP): recall@10 of every
approximate index against exact search, build time, per-query latency batched (all queries in
one call) and single-query (one call per query; median and p99), and the speedup over exact at
the same batching; then exact vs HNSW through ``headstart.index.VectorIndex`` at growing corpus
sizes, which is where ``AUTO_HNSW_FROM`` comes from. Floor (issue 13): recall@10 >= 0.95 at
>= 5x lower query latency than exact. Needs faiss-cpu (``pip install -e ".[bench]"``); hnswlib is
compared when it is installed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

# One thread, set before numpy/torch/faiss start their pools (2 shared cores: oversubscription
# made 2 threads 10x slower than 1 in issue 13's measurement).
_THREADS = "1"
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, _THREADS)
os.environ.setdefault("HEADSTART_PROGRESS", "0")

import numpy as np  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
N_QUERIES = 1000
K = 10
FLOOR_RECALL, FLOOR_SPEEDUP = 0.95, 5.0


# -- data and embeddings -------------------------------------------------------------------------


def sentences(data: Path) -> list[str]:
    """Unique sentences, in first-seen order: banking77 train+test, then STS-B en (both sides)."""
    seen: dict[str, None] = {}
    for name in ("train.csv", "test.csv"):
        with open(data / "banking77" / "banking_data" / name, newline="", encoding="utf-8") as f:
            for row in list(csv.reader(f))[1:]:
                seen.setdefault(row[0].strip(), None)
    for split in ("train", "dev", "test"):
        with open(data / "stsb_multi_mt" / "data" / f"stsb-en-{split}.csv", newline="", encoding="utf-8") as f:
            for row in csv.reader(f):
                seen.setdefault(row[0].strip(), None)
                seen.setdefault(row[1].strip(), None)
    seen.pop("", None)
    return list(seen)


def embeddings(texts: list[str]) -> tuple[np.ndarray, dict]:
    """MiniLM-L6 fp32 embeddings of ``texts`` (cached by backbone hash + texts hash)."""
    import torch

    from headstart._util import cache_dir
    from headstart.backbones import open_backbone

    torch.set_num_threads(int(_THREADS))
    backbone, sha = open_backbone("minilm-l6")
    producer = {"run": "benchmark", "backbone_sha256": sha, "embedding": backbone.preprocessing_signature()}
    key = hashlib.sha256(("\n".join(texts) + sha).encode()).hexdigest()[:16]
    path = cache_dir() / "benchmarks" / f"index-minilm-l6-{key}.npy"
    if path.exists():
        return np.load(path, allow_pickle=False), producer
    t0 = time.perf_counter()
    vectors = backbone.embed(texts, precision="fp32")
    print(f"embedded {len(texts)} sentences in {time.perf_counter() - t0:.0f} s (1 thread)", file=sys.stderr)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors, allow_pickle=False)
    return vectors, producer


# -- measurement ---------------------------------------------------------------------------------


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / len(t) for f, t in zip(found, truth)]))


def latencies(search_one, queries: np.ndarray) -> np.ndarray:
    """Seconds per single-query call, after a short warm-up."""
    for q in queries[:20]:
        search_one(q[None, :])
    out = np.empty(len(queries))
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        search_one(q[None, :])
        out[i] = time.perf_counter() - t0
    return out


def batched(search_all, queries: np.ndarray, repeat: int = 3) -> tuple[float, np.ndarray]:
    """(best seconds per query over ``repeat`` batched calls, the rows found)."""
    best, rows = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        rows = search_all(queries)
        best = min(best, (time.perf_counter() - t0) / len(queries))
    return best, rows


def row(name, params, build_s, recall, batch_s, single, exact_batch_s, exact_single_med):
    return {
        "index": name,
        "params": params,
        "build_s": build_s,
        "recall@10": recall,
        "batched_ms": batch_s * 1e3,
        "single_median_ms": float(np.median(single)) * 1e3,
        "single_p99_ms": float(np.percentile(single, 99)) * 1e3,
        "speedup_batched": exact_batch_s / batch_s,
        "speedup_single": exact_single_med / float(np.median(single)),
    }


def compare_libraries(corpus: np.ndarray, queries: np.ndarray) -> tuple[list[dict], np.ndarray]:
    import faiss

    from headstart.index.backends import exact_top_k

    faiss.omp_set_num_threads(int(_THREADS))
    rows: list[dict] = []
    truth = exact_top_k(corpus, queries, K)[0]
    e_batch, _ = batched(lambda q: exact_top_k(corpus, q, K)[0], queries)
    e_single = latencies(lambda q: exact_top_k(corpus, q, K), queries)
    e_med = float(np.median(e_single))
    rows.append(row("exact (numpy, headstart)", "-", 0.0, 1.0, e_batch, e_single, e_batch, e_med))

    flat = faiss.IndexFlatIP(corpus.shape[1])
    t0 = time.perf_counter()
    flat.add(corpus)
    b = time.perf_counter() - t0
    fb, found = batched(lambda q: flat.search(q, K)[1], queries)
    rows.append(row("exact (faiss IndexFlatIP)", "-", b, recall_at_k(found, truth), fb, latencies(lambda q: flat.search(q, K), queries), e_batch, e_med))

    for m, ef_c in ((16, 100), (32, 100), (32, 200)):
        index = faiss.IndexHNSWFlat(corpus.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_c
        t0 = time.perf_counter()
        index.add(corpus)
        b = time.perf_counter() - t0
        for ef in (16, 24, 32, 48, 64, 96, 128):
            index.hnsw.efSearch = ef
            hb, found = batched(lambda q: index.search(q, K)[1], queries)
            single = latencies(lambda q: index.search(q, K), queries)
            rows.append(row("faiss HNSW", f"M={m} efC={ef_c} efS={ef}", b, recall_at_k(found, truth), hb, single, e_batch, e_med))

    nlist = 4 * int(np.sqrt(len(corpus)))
    quantizer = faiss.IndexFlatIP(corpus.shape[1])
    ivf = faiss.IndexIVFFlat(quantizer, corpus.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    t0 = time.perf_counter()
    ivf.train(corpus)
    ivf.add(corpus)
    b = time.perf_counter() - t0
    for nprobe in (8, 16, 32, 64):
        ivf.nprobe = nprobe
        ib, found = batched(lambda q: ivf.search(q, K)[1], queries)
        single = latencies(lambda q: ivf.search(q, K), queries)
        rows.append(row("faiss IVF-Flat", f"nlist={nlist} nprobe={nprobe}", b, recall_at_k(found, truth), ib, single, e_batch, e_med))

    try:
        import hnswlib
    except ImportError:
        print("hnswlib not installed: not compared (pip install hnswlib)", file=sys.stderr)
    else:
        h = hnswlib.Index(space="ip", dim=corpus.shape[1])
        t0 = time.perf_counter()
        h.init_index(max_elements=len(corpus), M=32, ef_construction=100, random_seed=0)
        h.set_num_threads(int(_THREADS))
        h.add_items(corpus, np.arange(len(corpus)), num_threads=int(_THREADS))
        b = time.perf_counter() - t0
        for ef in (32, 48, 64, 96):
            h.set_ef(ef)
            hb, found = batched(lambda q: h.knn_query(q, k=K, num_threads=int(_THREADS))[0], queries)
            single = latencies(lambda q: h.knn_query(q, k=K, num_threads=int(_THREADS)), queries)
            rows.append(row(f"hnswlib {hnswlib.__version__ if hasattr(hnswlib, '__version__') else ''}".strip(), f"M=32 efC=100 ef={ef}", b, recall_at_k(found, truth), hb, single, e_batch, e_med))
    return rows, truth


def through_vector_index(corpus: np.ndarray, queries: np.ndarray, producer: dict, sizes: list[int]) -> list[dict]:
    """Exact vs HNSW as headstart's VectorIndex serves them (validation, normalisation, ids included)."""
    from headstart.index import HNSWParams, VectorIndex
    from headstart.index.backends import exact_top_k

    params = HNSWParams()
    out = []
    ids = [f"d{i}" for i in range(len(corpus))]
    for n in sizes:
        sub = corpus[:n]
        truth = exact_top_k(sub, queries, K)[0]
        res = {"docs": n}
        with tempfile.TemporaryDirectory() as tmp:
            for kind in ("exact", "hnsw"):
                t0 = time.perf_counter()
                index = VectorIndex.create(Path(tmp) / kind, corpus.shape[1], producer, kind=kind, hnsw=params)
                index.add(ids[:n], [""] * n, sub, producer=producer, progress=False)
                res[f"{kind}_build_s"] = time.perf_counter() - t0
                row_of = {d: i for i, d in enumerate(ids[:n])}
                found = np.array([[row_of[d] for d in r.ids] for r in index.search(queries, K, producer)])
                res[f"{kind}_recall@10"] = recall_at_k(found, truth)
                single = latencies(lambda q: index.search(q, K, producer), queries)
                res[f"{kind}_single_median_ms"] = float(np.median(single)) * 1e3
                res[f"{kind}_single_p99_ms"] = float(np.percentile(single, 99)) * 1e3
                res[f"{kind}_batched_ms"] = batched(lambda q: index.search(q, K, producer), queries, repeat=2)[0] * 1e3
        res["speedup_single"] = res["exact_single_median_ms"] / res["hnsw_single_median_ms"]
        res["speedup_batched"] = res["exact_batched_ms"] / res["hnsw_batched_ms"]
        out.append(res)
        print(f"  VectorIndex at {n} docs done", file=sys.stderr)
    res["params"] = params.to_dict()
    return out


# -- report --------------------------------------------------------------------------------------


def print_tables(n_corpus: int, libs: list[dict], sizes: list[dict], wall_s: float) -> None:
    print(f"\n## {n_corpus} corpus vectors (dim 384), {N_QUERIES} queries, k={K}, 1 thread\n")
    print("| index | params | build s | recall@10 | batched ms/q | speedup | single median ms | p99 ms | speedup |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in libs:
        print(
            f"| {r['index']} | {r['params']} | {r['build_s']:.2f} | {r['recall@10']:.4f} | {r['batched_ms']:.4f} | "
            f"{r['speedup_batched']:.1f}x | {r['single_median_ms']:.4f} | {r['single_p99_ms']:.4f} | {r['speedup_single']:.1f}x |"
        )
    print("\n## headstart VectorIndex, exact vs HNSW (defaults) by corpus size\n")
    print("| docs | exact build s | HNSW build s | HNSW recall@10 | exact single ms (p99) | HNSW single ms (p99) | speedup single | exact batched ms/q | HNSW batched ms/q | speedup batched |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in sizes:
        print(
            f"| {r['docs']} | {r['exact_build_s']:.2f} | {r['hnsw_build_s']:.2f} | {r['hnsw_recall@10']:.4f} | "
            f"{r['exact_single_median_ms']:.3f} ({r['exact_single_p99_ms']:.3f}) | {r['hnsw_single_median_ms']:.3f} ({r['hnsw_single_p99_ms']:.3f}) | "
            f"{r['speedup_single']:.1f}x | {r['exact_batched_ms']:.4f} | {r['hnsw_batched_ms']:.4f} | {r['speedup_batched']:.1f}x |"
        )
    full = sizes[-1]
    ok = full["hnsw_recall@10"] >= FLOOR_RECALL and full["speedup_single"] >= FLOOR_SPEEDUP
    print(
        f"\nFloor (recall@10 >= {FLOOR_RECALL} at >= {FLOOR_SPEEDUP:.0f}x lower single-query latency than exact, "
        f"{full['docs']} docs, VectorIndex defaults {full.get('params', '')}): {'met' if ok else 'NOT met'} "
        f"(recall {full['hnsw_recall@10']:.4f}, {full['speedup_single']:.1f}x)"
    )
    print(f"wall time {wall_s:.0f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder (banking77, stsb_multi_mt)")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    needed = [args.data / "banking77" / "banking_data", args.data / "stsb_multi_mt" / "data"]
    if not all(p.is_dir() for p in needed):
        print(f"skipped: {needed[0]} or {needed[1]} is absent (the shared data folder; see its README)")
        return 0
    try:
        import faiss  # noqa: F401
    except ImportError:
        print('skipped: faiss is not installed (pip install "headstart[search]" or -e ".[bench]")')
        return 0
    t_start = time.perf_counter()
    texts = sentences(args.data)
    vectors, producer = embeddings(texts)
    rng = np.random.default_rng(13)
    order = rng.permutation(len(texts))
    queries = np.ascontiguousarray(vectors[order[:N_QUERIES]])
    corpus = np.ascontiguousarray(vectors[order[N_QUERIES:]])
    if len(corpus) < 20_000:
        print(f"only {len(corpus)} corpus sentences (< 20,000, the issue's floor)", file=sys.stderr)
    libs, _ = compare_libraries(corpus, queries)
    sizes = [n for n in (1000, 2000, 5000, 7500, 10_000, 15_000, 20_000) if n < len(corpus)] + [len(corpus)]
    by_size = through_vector_index(corpus, queries, producer, sizes)
    wall = time.perf_counter() - t_start
    print_tables(len(corpus), libs, by_size, wall)
    if args.json:
        args.json.write_text(json.dumps({"corpus": len(corpus), "queries": N_QUERIES, "libraries": libs, "by_size": by_size, "wall_s": wall}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
