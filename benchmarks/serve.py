"""Load test of `headstart serve` (issue 17): a real client (`hey`, Debian's package) on loopback
against a served MiniLM-L6 classification run, with and without micro-batching.

The run: the packaged ``minilm-l6`` + linear probe on ``examples/support_tickets.csv`` (made once
in a temporary home, or ``--run RUN``). Each configuration starts ``headstart serve`` as its own
process, waits for ``/ready``, then ``hey -z DURATION -c 16`` POSTs one support message per
request to ``/v1/predict`` (after 3 s of warm-up load, not counted). Printed per configuration: requests/s, p50 / p99 latency, non-2xx
answers, client errors (timeouts, refused or dropped connections), mean items per model call
(from the server's ``/metrics``). Then a soak: the batching server under the same load for
``--soak`` seconds, its RSS sampled every 10 s; memory is "flat" when every sample after the
first minute stays within +-10% of the first-minute sample.

Floors (issue 17): zero 5xx and zero dropped requests; micro-batching >= 2x the requests/s of
one-request-at-a-time serving; memory flat over a 5-minute soak.

    apt-get install hey                       # the load generator
    python benchmarks/serve.py                # ~9 min: 6 x 30 s configurations (torch and the ONNX export)
                                              # + a 5-minute soak
    python benchmarks/serve.py --quick        # ~2 min: 10 s each, 60 s soak (a smoke run)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXT = "I was charged twice for my card order, can you refund one of the payments?"


def start_server(run: str, env: dict, *args: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "headstart.cli", "serve", run, "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = None
    for _ in range(10):
        line = proc.stdout.readline()
        if not line:
            break
        found = re.search(r"listening on (http://\S+)", line)
        if found:
            url = found.group(1)
            break
    if url is None:
        proc.kill()
        raise SystemExit(f"the server did not start: {proc.stderr.read()}")
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/ready", timeout=5) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server was not ready in 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def hey(url: str, seconds: int, concurrency: int, body: Path) -> dict:
    out = subprocess.run(["hey", "-z", f"{seconds}s", "-c", str(concurrency), "-m", "POST", "-T", "application/json",
                          "-D", str(body), "-t", "30", url + "/v1/predict"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {int(p): float(v) * 1000 for p, v in re.findall(r"(\d+)%+ in ([\d.]+) secs", out)}
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    errors_block = out.split("Error distribution:")[1] if "Error distribution:" in out else ""
    errors = sum(int(n) for n in re.findall(r"\[(\d+)\]\s", errors_block))
    return {"rps": rps, "p50_ms": pct.get(50), "p99_ms": pct.get(99), "codes": codes, "client_errors": errors,
            "responses": sum(codes.values())}


def server_metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        return r.read().decode()


def mean_batch_counts(metrics: str) -> tuple[float, float]:
    """(items, model calls) of /v1/predict so far, from the server's /metrics."""
    s = re.search(r'headstart_batch_items_sum\{[^}]*verb="predict"\} (\S+)', metrics)
    c = re.search(r'headstart_batch_items_count\{[^}]*verb="predict"\} (\S+)', metrics)
    return (float(s.group(1)), float(c.group(1))) if s and c else (0.0, 0.0)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


def make_run(home: Path, env: dict) -> str:
    out = subprocess.run([sys.executable, "-m", "headstart.cli", "adapt", str(ROOT / "examples" / "support_tickets.csv"),
                          "--backbone", "minilm-l6", "--method", "linear-probe", "--json", "--quiet"],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"adapting the benchmark run failed: {out.stderr}")
    return json.loads(out.stdout)["path"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="serve this run instead of adapting MiniLM-L6 on support_tickets.csv")
    ap.add_argument("--seconds", type=int, default=30, help="load per configuration (default: 30)")
    ap.add_argument("--soak", type=int, default=300, help="soak seconds (default: 300; 0: none)")
    ap.add_argument("--soak-threads", type=int, default=None, help="torch threads of the soak server (default: serve's default)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="10 s per configuration, 60 s soak")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch thread counts to measure (default: 1 2)")
    ap.add_argument("--no-onnx", action="store_true", help="skip serving the run's ONNX export (headstart export --format onnx)")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.soak = 10, 60
    if shutil.which("hey") is None:
        print("benchmarks/serve.py needs `hey` (apt-get install hey)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="headstart-serve-bench-"))
    env = {**os.environ, "HEADSTART_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    if "HEADSTART_HOME" not in os.environ:
        env["HEADSTART_HOME"] = str(tmp / "home")
    run = args.run or make_run(tmp, env)
    body = tmp / "body.json"
    body.write_text(json.dumps({"inputs": [TEXT]}))
    configs = []
    for n in args.threads:
        unit = "thread" if n == 1 else "threads"
        configs += [(f"no batching, {n} {unit}", run, ["--no-batching", "--threads", str(n)]),
                    (f"micro-batching, {n} {unit}", run, ["--threads", str(n)])]
    if not args.no_onnx:
        onnx = tmp / "onnx"
        done = subprocess.run([sys.executable, "-m", "headstart.cli", "export", run, "--format", "onnx", "--out", str(onnx),
                               "--quiet"], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(f"the ONNX export failed: {done.stderr}")
        for n in args.threads:
            unit = "thread" if n == 1 else "threads"
            configs += [(f"ONNX Runtime, no batching, {n} {unit}", str(onnx), ["--no-batching", "--threads", str(n)]),
                        (f"ONNX Runtime, micro-batching, {n} {unit}", str(onnx), ["--threads", str(n)])]
    print(f"run {run}\nhey -z {args.seconds}s -c {args.concurrency}, one text per POST /v1/predict, "
          f"{os.cpu_count()} CPUs\n")
    rows = []
    for name, target, flags in configs:
        proc, url = start_server(target, env, *flags)
        try:
            hey(url, 3, args.concurrency, body)  # warm-up (first calls, allocator, page cache), not counted
            before = mean_batch_counts(server_metrics(url))
            r = hey(url, args.seconds, args.concurrency, body)
            after = mean_batch_counts(server_metrics(url))
            r["batch"] = (after[0] - before[0]) / max(after[1] - before[1], 1)
            r["rss_mb"] = rss_mb(proc.pid)
        finally:
            stop_server(proc)
        rows.append((name, r))
        bad = sum(n for c, n in r["codes"].items() if c >= 300)
        print(f"{name:<40} {r['rps']:7.1f} req/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
              f"non-2xx {bad}  client errors {r['client_errors']}  mean batch {r['batch']:.1f}  RSS {r['rss_mb']:.0f} MB",
              flush=True)
    by = dict(rows)
    print()
    ratios = []
    for n in args.threads:
        unit = "thread" if n == 1 else "threads"
        r = by[f"micro-batching, {n} {unit}"]["rps"] / by[f"no batching, {n} {unit}"]["rps"]
        ratios.append(r)
        print(f"micro-batching / one request per call ({n} {unit}): {r:.2f}x requests/s")
        if not args.no_onnx:
            o = by[f"ONNX Runtime, micro-batching, {n} {unit}"]["rps"] / by[f"micro-batching, {n} {unit}"]["rps"]
            print(f"ONNX Runtime / torch (micro-batching, {n} {unit}): {o:.2f}x requests/s")
    if len(args.threads) > 1:
        best = max(args.threads, key=lambda n: by[f"micro-batching, {n} {'thread' if n == 1 else 'threads'}"]["rps"])
        print(f"fastest thread count with micro-batching: {best}")
    ratio = ratios[0]
    five = sum(n for _, r in rows for c, n in r["codes"].items() if c >= 500)
    dropped = sum(r["client_errors"] for _, r in rows)
    ok = five == 0 and dropped == 0 and ratio >= 2.0
    print(f"floor: zero 5xx ({five}) and zero dropped ({dropped}): {'PASS' if five == 0 and dropped == 0 else 'FAIL'}")
    print(f"floor: micro-batching >= 2x one-at-a-time ({args.threads[0]} thread(s): {ratio:.2f}x): "
          f"{'PASS' if ratio >= 2 else 'FAIL'}")

    if args.soak:
        proc, url = start_server(run, env, *(["--threads", str(args.soak_threads)] if args.soak_threads else []))
        samples = []
        try:
            load = subprocess.Popen(["hey", "-z", f"{args.soak}s", "-c", str(args.concurrency), "-m", "POST", "-T",
                                     "application/json", "-D", str(body), "-t", "30", url + "/v1/predict"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            t0 = time.time()
            while load.poll() is None:
                time.sleep(10)
                if load.poll() is None:
                    samples.append((round(time.time() - t0), rss_mb(proc.pid)))
            out = load.stdout.read()
        finally:
            stop_server(proc)
        codes = {int(c): int(n) for c, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
        base = next((mb for t, mb in samples if t >= 60), samples[-1][1] if samples else float("nan"))
        later = [mb for t, mb in samples if t >= 60]
        spread = max(abs(mb - base) / base for mb in later) if later else float("nan")
        print(f"\nsoak {args.soak} s at -c {args.concurrency}: {sum(codes.values())} responses {codes}; RSS MB every 10 s: "
              + " ".join(f"{mb:.0f}" for _, mb in samples))
        flat = spread <= 0.10
        print(f"floor: memory flat within 10% after the first minute (max deviation {spread * 100:.1f}% from "
              f"{base:.0f} MB): {'PASS' if flat else 'FAIL'}")
        ok = ok and flat and all(c < 300 for c in codes)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
