"""Load on loopback: one ``hm3 serve`` of the merged four-task demo model against four single-task
``hm3 serve`` processes that a client calls one after another per request (how guard stacks run
their scanners today); then the fault cases.

For each setup, ``--clients`` concurrent clients send ``--requests`` requests (one demo text
each) and stop: throughput (requests/s), p50 and p99 latency (for the chain: the four calls
together) and errors (anything but a 200, or a transport error). Setups: ``merged`` (one server,
every task in one pass), ``chain`` (the four servers in turn), ``single`` (one single-task server
alone, the latency a merge must match). Then, against the merged model: clients that disconnect
mid-request (the server's answers to the others are unchanged), a burst of ``--clients``
requests over ``--max-concurrent 16`` (429s, no 5xx, the server still answers), and a 10 MB
body (413). Servers run one setup at a time, each a subprocess with torch's default threads.

Goals (issue 21 §5): zero errors; merged throughput >= 3x the chain's; merged p50 <= 1.1x the
single server's. The merged model: ``--merged DIR``, else a TIES merge of the four zoo models
into ``--work`` (reused when present).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from _common import add_cache, demo_max_length, markdown_table, new_parser, print_record, run_record

TASKS = ("prompt_attack", "toxicity", "spam", "sentiment")


def main() -> None:
    parser = new_parser(__doc__)
    add_cache(parser)
    parser.add_argument("--merged", type=Path, help="merged four-task model (default: merge)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/hm3-serve-load"))
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--requests", type=int, default=600, help="requests per setup")
    parser.add_argument("--max-length", type=int, default=None, help="default: the demo's")
    args = parser.parse_args()
    record = run_record("serve_load.py")
    zoo = zoo_models(args.cache)
    merged = args.merged or merge(zoo, args.work / "merged", args.cache)
    texts = demo_texts(args.cache)
    flags = ["--max-length", str(args.max_length or demo_max_length()), "--no-windows"]
    rows = {}
    with serving([merged], flags) as (url,):
        rows["merged"] = load([f"{url}/v1/classify"], texts, args.clients, args.requests)
        faults = fault_cases(url, texts)
    with serving([zoo[t] for t in TASKS], flags) as urls:
        routes = [f"{u}/v1/classify" for u in urls]
        rows["chain"] = load(routes, texts, args.clients, args.requests)
        rows["single"] = load(routes[:1], texts, args.clients, args.requests)
    with serving([merged], [*flags, "--max-concurrent", "16"]) as (url,):
        faults.update(burst(url, texts, args.clients))
    print_record(record)
    print(
        f"- load: {args.clients} concurrent clients, {args.requests} requests per setup, "
        f"one text per request; flags {' '.join(flags)}\n"
    )
    header = ["setup", "requests/s", "p50 ms", "p99 ms", "errors"]
    print(
        markdown_table(
            header,
            [
                [
                    name,
                    f"{r['rps']:.1f}",
                    f"{r['p50'] * 1e3:.1f}",
                    f"{r['p99'] * 1e3:.1f}",
                    str(r["errors"]),
                ]
                for name, r in rows.items()
            ],
        )
    )
    ratio_rps = rows["merged"]["rps"] / rows["chain"]["rps"]
    ratio_p50 = rows["merged"]["p50"] / rows["single"]["p50"]
    print(f"\nmerged / chain throughput: {ratio_rps:.2f}x (goal >= 3)")
    print(f"merged / single p50: {ratio_p50:.2f}x (goal <= 1.1)")
    print(f"errors: {sum(r['errors'] for r in rows.values())} (goal 0)")
    for name, r in rows.items():
        for kind, count in r.get("kinds", {}).items():
            print(f"  {name}: {count} x {kind}")
    print()
    print(markdown_table(["fault case", "result"], [[k, v] for k, v in faults.items()]))


def zoo_models(cache: Path | None) -> dict[str, Path]:
    from hm3.demo.sources.fetch import cache_root

    root = cache_root(cache) / "zoo"
    found = {}
    for task in TASKS:
        dirs = sorted(p for p in root.glob(f"{task}-*") if (p / "config.json").is_file())
        if not dirs:
            sys.exit(f"{root}: no {task} model; run `hm3 demo` once to train the zoo")
        found[task] = dirs[0]
    return found


def merge(zoo: dict[str, Path], out: Path, cache: Path | None) -> Path:
    """TIES-merge the four zoo models (reused when ``out`` holds one)."""
    if (out / "config.json").is_file():
        return out
    import hm3
    from hm3.demo.sources.fetch import base_model_dir
    from hm3.merging.config import MergeConfig

    config = MergeConfig.from_dict(
        {
            "base_model": str(base_model_dir(cache)),
            "merge_method": "ties",
            "seed": 0,
            "models": [{"model": str(path), "name": task} for task, path in zoo.items()],
        },
        source="serve_load",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    return hm3.merge(config, out, progress=False).path


def demo_texts(cache: Path | None) -> list[str]:
    from hm3.demo.sources.fetch import cache_root

    files = sorted((cache_root(cache) / "data").glob("v*/*/unlabeled.jsonl"))
    if not files:
        sys.exit("no demo data; run `hm3 demo` once")
    with files[-1].open(encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


@contextmanager
def serving(models: list[Path], flags: list[str]):
    """``hm3 serve`` subprocesses on free loopback ports, ready; stopped (SIGINT) after."""
    procs, urls = [], []
    try:
        for model in models:
            proc = subprocess.Popen(
                [sys.executable, "-m", "hm3.cli.app", "serve", str(model), "--port", "0", *flags],
                stderr=subprocess.PIPE,
                text=True,
            )
            procs.append(proc)
            line = proc.stderr.readline()
            found = re.search(r"http://127\.0\.0\.1:(\d+)", line)
            if not found:
                proc.kill()
                sys.exit(f"hm3 serve {model} did not start: {line}{proc.stderr.read()}")
            urls.append(f"http://127.0.0.1:{found.group(1)}")
        for url in urls:
            wait_ready(url)
        yield urls
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def wait_ready(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    sys.exit(f"{url} not ready after {timeout} s")


def load(routes: list[str], texts: list[str], clients: int, requests: int) -> dict:
    """``requests`` requests from ``clients`` concurrent clients; each calls ``routes`` in turn."""
    return asyncio.run(_load(routes, texts, clients, requests))


async def _load(routes: list[str], texts: list[str], clients: int, requests: int) -> dict:
    limits = httpx.Limits(max_connections=clients * len(routes), max_keepalive_connections=None)
    latencies: list[float] = []
    kinds: Counter[str] = Counter()  # each error: an HTTP status or an exception
    next_request = iter(range(requests))
    async with httpx.AsyncClient(limits=limits, timeout=120) as http:
        for route in routes:  # warm: one request each, not counted
            await http.post(route, json={"texts": texts[:1]})

        async def client() -> None:
            for i in next_request:
                body = {"texts": [texts[i % len(texts)]]}
                started = time.perf_counter()
                try:
                    for route in routes:
                        r = await http.post(route, json=body)
                        if r.status_code != 200:
                            kinds[f"HTTP {r.status_code}: {r.text[:80]}"] += 1
                            break
                    else:
                        latencies.append(time.perf_counter() - started)
                except httpx.HTTPError as exc:
                    kinds[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - started
    lat = np.array(latencies) if latencies else np.array([np.nan])
    return {
        "rps": len(latencies) / wall,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
        "errors": sum(kinds.values()),
        "kinds": dict(kinds),
    }


def fault_cases(url: str, texts: list[str]) -> dict[str, str]:
    """Disconnecting clients and a 10 MB body against a running server."""
    body = {"texts": texts[:3]}
    before = httpx.post(f"{url}/v1/classify", json=body, timeout=60).json()
    host, port = url.removeprefix("http://").split(":")
    raw = json.dumps(body).encode()
    head = (
        f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(raw)}\r\n\r\n"
    ).encode()
    for payload in [head + raw] * 50 + [head + raw[:20]] * 50:
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(payload)  # and leave without reading the answer
    time.sleep(1)
    after = httpx.post(f"{url}/v1/classify", json=body, timeout=60)
    # a forward batch of another shape moves float32 scores by ~1e-7: compare labels and 1e-5
    diff = max_difference(before, after.json()) if after.status_code == 200 else None
    same = diff is not None and diff[0] and diff[1] <= 1e-5
    big = b'{"texts": ["' + b"x" * 10_000_000 + b'"]}'
    r = httpx.post(
        f"{url}/v1/classify", content=big, timeout=60, headers={"content-type": "application/json"}
    )
    alive = httpx.get(f"{url}/healthz").status_code == 200
    change = f"same labels: {diff[0]}, largest score change {diff[1]:.1e})" if diff else ")"
    answer = f"later answer {'unchanged' if same else 'CHANGED'} (status {after.status_code}; "
    return {
        "100 clients leave mid-request (50 after the body, 50 mid-body)": answer + change,
        "10 MB body": f"{r.status_code} {r.json().get('error', '')[:60]}...; server up: {alive}",
    }


def max_difference(a: dict, b: dict) -> tuple[bool, float]:
    """Whether two /v1/classify answers have the same labels, and their largest score change."""
    labels, largest = True, 0.0
    for x, y in zip(a["results"], b["results"], strict=True):
        for task, pred in x["tasks"].items():
            labels &= pred["label"] == y["tasks"][task]["label"]
            for label, score in pred["scores"].items():
                largest = max(largest, abs(score - y["tasks"][task]["scores"][label]))
    return labels, largest


def burst(url: str, texts: list[str], clients: int) -> dict[str, str]:
    """``clients`` requests at once against ``--max-concurrent 16``."""

    async def fire() -> list[int]:
        limits = httpx.Limits(max_connections=clients)
        async with httpx.AsyncClient(limits=limits, timeout=120) as http:

            async def one(i: int) -> int:
                r = await http.post(f"{url}/v1/classify", json={"texts": [texts[i % len(texts)]]})
                return r.status_code

            return await asyncio.gather(*(one(i) for i in range(clients)))

    codes = asyncio.run(fire())
    alive = httpx.post(f"{url}/v1/classify", json={"texts": texts[:1]}).status_code
    counts = {c: codes.count(c) for c in sorted(set(codes))}
    name = f"burst of {clients} over --max-concurrent 16"
    return {name: f"status counts {counts}; next request {alive}"}


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
