"""Serving throughput: `panda-chat serve` with continuous batching against the same server decoding one request at
a time, for 1, 4, 16 and 32 concurrent clients, each client a distinct user.

    python benchmarks/bench_serve.py                          # the embedded demo model, ~7 minutes
    python benchmarks/bench_serve.py --clients 16 --seconds 6 --json benchmarks/results/serve.json

Two servers are started on one fresh SQLite database (loopback, a free port each): ``--max-batch 32`` (batching)
and ``--max-batch 1`` (one request at a time: the same code path, one row per step). For each client count both are
measured in the same run, alternately, so they see the same machine load. Every client streams chat
completions one after another for ``--seconds`` (greedy, ``--max-tokens`` tokens at most, a question of its own)
through HTTP, as an application would, and finishes the answer it is in: a server under a steady load, not a
burst that ends in a half-empty batch. TTFT is the time to the first piece of answer text, latency the time to the
end of the stream. Throughput is all completion tokens (the server's own usage counts) over the wall time of the
level. Each level runs ``--repeat`` times per mode, alternately (fresh users each time), and the run with the median
throughput is reported: on a shared machine one burst of someone else's work should not decide a ratio.

A second table measures the scheduler alone, in this process, with no HTTP and no profile store: what batching
buys the decoding itself (``scheduler_levels``).

The servers use the fast hashing embedder for the profile store (``--embedder`` to change it), so the numbers are
those of decoding and serving, and torch runs with ``--threads`` threads per server (default 1).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "How do magnets work?",
    "Give me a tip for sleeping better.",
    "What is rain?",
    "Explain taxes simply.",
    "How do I learn to swim?",
    "Why do cats purr?",
    "What is a black hole?",
    "How do I bake bread?",
    "Why is the sky blue?",
    "What makes a good password?",
    "How do vaccines work?",
    "What is inflation?",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cli(*args: str, threads: int = 1, **popen) -> subprocess.Popen:
    code = f"import torch; torch.set_num_threads({threads}); from panda_chat.cli import main; main()"
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, **popen)


def start_server(db: str, max_batch: int, args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    extra = ["--embedder", args.embedder] if args.embedder else []
    with open(log, "wb") as out:
        process = _cli(
            "serve",
            "--db",
            db,
            "--port",
            str(port),
            "--max-batch",
            str(max_batch),
            "--requests-per-minute",
            "100000",
            *extra,
            threads=args.threads,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited:\n{log.read_text()[-2000:]}")
        try:
            httpx.get(f"{url}/healthz", timeout=5).raise_for_status()
            return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not start in 300 s")


def one_stream(
    url: str, key: str, user: str, question: str, max_tokens: int, http: httpx.Client | None = None
) -> tuple[float, float, int]:
    """(ttft_s, latency_s, completion_tokens) of one streamed completion (on ``http``'s kept-alive connection, as an
    SDK client does; without one, a new connection)."""
    body = {
        "model": "panda-chat-demo",
        "user": user,
        "stream": True,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": question}],
    }
    started = time.perf_counter()
    ttft, tokens = None, 0
    with (http or httpx).stream(
        "POST", f"{url}/v1/chat/completions", json=body, timeout=600, headers={"Authorization": f"Bearer {key}"}
    ) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:  # the server ended the stream with an error: a benchmark of failures is no benchmark
                raise RuntimeError(f"the server sent an error: {chunk['error']}")
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            if ttft is None and chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                ttft = time.perf_counter() - started
    latency = time.perf_counter() - started
    return (ttft if ttft is not None else latency), latency, tokens


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) a process and its children (the server's engine process) have used
    so far; None where /proc is not there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except OSError:
        return None
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(child) or 0.0 for child in children)


def run_level(
    url: str, key: str, clients: int, seconds: float, max_tokens: int, tag: str, pid: int | None = None
) -> dict:
    """``clients`` clients, each streaming one completion after another (a question of its own each time) until
    ``seconds`` have passed; the level ends when the last one's answer has ended. Throughput is every completion
    token over that whole wall time, the wind-down included (the last answers run in a shrinking batch)."""
    results: list[tuple[float, float, int]] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    failures: list[str] = []

    def client(number: int) -> None:
        round_ = 0
        with httpx.Client(timeout=600) as http:  # one connection per client, kept alive (what an SDK does)
            while round_ == 0 or time.perf_counter() < deadline:
                question = QUESTIONS[(number + round_) % len(QUESTIONS)]
                try:
                    measured = one_stream(url, key, f"{tag}-c{clients}-u{number}", question, max_tokens, http)
                except (RuntimeError, httpx.HTTPError) as error:
                    failures.append(f"{type(error).__name__}: {error}")
                    return
                with lock:
                    results.append(measured)
                round_ += 1

    cpu_before = cpu_seconds(pid) if pid is not None else None
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    cpu_after = cpu_seconds(pid) if pid is not None else None
    if failures:
        raise SystemExit(f"{len(failures)} of the {clients} clients failed; the first: {failures[0]}")
    ttfts, latencies = sorted(r[0] for r in results), sorted(r[1] for r in results)
    tokens = sum(r[2] for r in results)
    return {
        "clients": clients,
        "requests": len(results),
        "tokens": tokens,
        "wall_s": wall,
        "tok_per_s": tokens / wall,
        # the server's CPU per token: what the throughput ratio tends to on a machine busy with other work
        "server_cpu_ms_per_token": None
        if cpu_before is None or cpu_after is None or not tokens
        else (cpu_after - cpu_before) / tokens * 1000,
        "ttft_p50_s": statistics.median(ttfts),
        "ttft_p99_s": _percentile(ttfts, 0.99),
        "latency_p50_s": statistics.median(latencies),
        "latency_p99_s": _percentile(latencies, 0.99),
    }


def _median_run(runs: list[dict]) -> dict:
    """The run with the median throughput (the upper one of an even count): one noisy run does not decide."""
    return sorted(runs, key=lambda run: run["tok_per_s"])[len(runs) // 2]


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def scheduler_levels(clients: list[int], max_tokens: int, threads: int) -> list[dict]:
    """The scheduler alone, in this process (no HTTP, no profile store): N requests submitted at once, each decoding
    ``max_tokens`` tokens (EOS ignored, so every level decodes the same work) with the demo model's pole heads and
    learned lambda, batched (``max_batch=32``) against one at a time (``max_batch=1``)."""
    import torch

    from panda_chat.decoding import PandaDecoder
    from panda_chat.demo import demo_head_paths, demo_lambda_path, demo_model_dir
    from panda_chat.lam.learned import LearnedLambda
    from panda_chat.rewards.heads import HeadReward, RewardHead
    from panda_chat.serving import BatchScheduler

    torch.set_num_threads(threads)
    decoder = PandaDecoder.from_pretrained(str(demo_model_dir()), device="cpu", dtype="float32")
    heads = {pole: HeadReward(RewardHead.load(path), pole) for pole, path in demo_head_paths().items()}
    lam = LearnedLambda.load(demo_lambda_path())
    features = torch.rand(max(clients), lam.config.preference_dim)
    weights = [{"expert": 0.6, "concise": 0.4}, {"friendly": 0.7}, {"detailed": 0.5, "formal": 0.3}]
    schedulers = {
        "batched": BatchScheduler(decoder, max_batch=32),
        "one-at-a-time": BatchScheduler(decoder, max_batch=1),
    }
    rows = []
    for count in clients:
        level = {}
        for mode, scheduler in schedulers.items():
            prompts = [f"Question {i}: {QUESTIONS[i % len(QUESTIONS)]}" for i in range(count)]
            started = time.perf_counter()
            scheduler.generate(
                prompts,
                weights=[weights[i % 3] for i in range(count)],
                rewards=heads,
                lam=lam,
                preference_features=features[:count],
                max_new_tokens=max_tokens,
                stop_at_eos=False,
            )
            level[mode] = count * max_tokens / (time.perf_counter() - started)
        rows.append({"clients": count, **level, "speedup": level["batched"] / level["one-at-a-time"]})
        print(
            f"  scheduler {count:>2} rows: {level['batched']:.1f} vs {level['one-at-a-time']:.1f} tok/s",
            file=sys.stderr,
        )
    for scheduler in schedulers.values():
        scheduler.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 32])
    parser.add_argument(
        "--seconds", type=float, default=12.0, help="how long the clients of a level keep sending, per run"
    )
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each level per mode, alternated; the median run is reported"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads per server")
    parser.add_argument("--embedder", default="hashing", help="the store's embedder ('' for the default MiniLM)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    load_at_start = os.getloadavg()
    folder = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    db = str(folder / "profiles.db")
    made = _cli("key", "create", "bench", "--all-users", "--db", db, "--json", stdout=subprocess.PIPE)
    key = json.loads(made.communicate(timeout=120)[0])["key"]
    servers = {
        "batched": start_server(db, 32, args, folder / "batched.log"),
        "one-at-a-time": start_server(db, 1, args, folder / "single.log"),
    }
    rows = []
    try:
        for mode, (_, url) in servers.items():  # warm-up: model, rewards and lambda loaded, first decode done
            one_stream(url, key, f"warmup-{mode}", QUESTIONS[0], 4)
        for clients in args.clients:
            runs: dict[str, list[dict]] = {mode: [] for mode in servers}
            for repeat in range(args.repeat):  # alternately, the order flipped each time: both see the same load
                order = list(servers) if repeat % 2 == 0 else list(servers)[::-1]
                for mode in order:
                    process, url = servers[mode]
                    run = run_level(url, key, clients, args.seconds, args.max_tokens, f"{mode}-r{repeat}", process.pid)
                    runs[mode].append(run)
                    print(f"  {clients:>2} clients, {mode:<13} {run['tok_per_s']:7.1f} tok/s", file=sys.stderr)
            level = {
                mode: {**_median_run(measured), "runs_tok_per_s": [r["tok_per_s"] for r in measured]}
                for mode, measured in runs.items()
            }
            rows.append(
                {
                    "clients": clients,
                    **level,
                    "speedup": level["batched"]["tok_per_s"] / level["one-at-a-time"]["tok_per_s"],
                }
            )
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)

    engine_rows = scheduler_levels(args.clients, args.max_tokens, args.threads)
    print("| rows | batched tok/s | one-at-a-time tok/s | speed-up |")
    print("|---:|---:|---:|---:|")
    for row in engine_rows:
        print(f"| {row['clients']} | {row['batched']:.1f} | {row['one-at-a-time']:.1f} | {row['speedup']:.1f}x |")
    print()
    print(
        "| clients | mode | tok/s | TTFT p50 | TTFT p99 | latency p50 | latency p99 | server CPU/token | speed-up "
        "| CPU/token ratio |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        for mode in ("batched", "one-at-a-time"):
            r = row[mode]
            cpu = r["server_cpu_ms_per_token"]
            single_cpu = row["one-at-a-time"]["server_cpu_ms_per_token"]
            speedup = f"{row['speedup']:.1f}x" if mode == "batched" else ""
            cpu_ratio = f"{single_cpu / cpu:.1f}x" if mode == "batched" and cpu and single_cpu else ""
            print(
                f"| {row['clients']} | {mode} | {r['tok_per_s']:.1f} | {r['ttft_p50_s']:.2f} s | "
                f"{r['ttft_p99_s']:.2f} s | {r['latency_p50_s']:.2f} s | {r['latency_p99_s']:.2f} s | "
                f"{'' if cpu is None else f'{cpu:.2f} ms'} | {speedup} | {cpu_ratio} |"
            )
    start, end = ("/".join(f"{value:.2f}" for value in load) for load in (load_at_start, os.getloadavg()))
    print(f"\nload average (1/5/15 min) at start {start}, at end {end}; {os.cpu_count()} CPUs")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "date": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": platform.platform(),
                    "cpus": os.cpu_count(),
                    "threads": args.threads,
                    "seconds": args.seconds,
                    "repeat": args.repeat,
                    "load_average": {"start": load_at_start, "end": os.getloadavg()},
                    "max_tokens": args.max_tokens,
                    "embedder": args.embedder or "default",
                    "levels": rows,
                    "scheduler_only": engine_rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
