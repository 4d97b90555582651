"""Benchmark of the inference core on one tick of many symbols; prints a markdown table.

    python benchmarks/bench_model.py [--model models/default] [--symbols 100] [--repeat 10]

Rows: one batched eager forward for all symbols vs one eager call per symbol; torch.compile
vs eager (same batch) and the compile time at start-up; Hugging Face transformers'
PatchTSTForClassification of similar size on the same input (a channel-independent PatchTST,
for reference); resident memory of the process with the loaded engine. The input is real:
feature windows of the held-out candles, tiled to the requested number of symbols.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def _time(fn, repeat: int) -> float:
    """Median seconds of ``repeat`` calls after two warm-up calls."""
    fn()
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def real_windows(engine, n_symbols: int) -> np.ndarray:
    """[n_symbols, context, F] windows from the held-out candles (features of 7 symbols, tiled)."""
    from features.candle_files import load_candle_dir
    from model.dataset import AnchorPool
    from model.series import build_series

    frames = load_candle_dir(ROOT / "data/candles/bybit_linear_2025-06")
    frames = {s: f.iloc[-15_000:] for s, f in frames.items()}
    series = build_series(frames, "bench", engine.bar_minutes, engine.target_spec.horizons)
    pool = AnchorPool.build(series, engine.context_length, engine.bar_minutes)
    rows = pool.valid[np.linspace(0, pool.valid.size - 1, n_symbols).astype(int)]
    offs = engine.bar_minutes * np.arange(engine.context_length - 1, -1, -1)
    return pool.unscaled[rows[:, None] - offs[None, :]].astype(np.float32)


def hf_reference(cfg, n_features: int):
    from transformers import PatchTSTConfig, PatchTSTForClassification

    hf_cfg = PatchTSTConfig(
        num_input_channels=n_features,
        context_length=cfg.context_length,
        patch_length=cfg.patch_len,
        patch_stride=cfg.stride,
        d_model=cfg.d_model,
        num_attention_heads=cfg.n_heads,
        num_hidden_layers=cfg.n_layers,
        ffn_dim=cfg.ff_mult * cfg.d_model,
        num_targets=3,
        use_cls_token=True,
        scaling="std",
    )
    return PatchTSTForClassification(hf_cfg).eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models/default"))
    ap.add_argument("--symbols", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--no-hf", action="store_true", help="skip the transformers reference")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from model.inference import InferenceEngine

    rss0 = _rss_mb()
    eager = InferenceEngine.from_bundle(args.model, device="cpu", compile=False, batch_buckets=(1, 8, 32, 128))
    rss_loaded = _rss_mb()
    n = args.symbols
    x = real_windows(eager, n)
    syms = [f"S{i}" for i in range(n)]
    n_params = eager.bundle.model.n_parameters()

    rows: list[tuple[str, str, str]] = []
    t_batch = _time(lambda: eager.predict(x, syms), args.repeat)
    t_single = _time(lambda: [eager.predict(x[i : i + 1], syms[i : i + 1]) for i in range(n)], max(2, args.repeat // 3))
    rows.append((f"eager, one batched forward, {n} symbols", f"{t_batch * 1e3:.1f} ms", f"{n / t_batch:,.0f} sym/s"))
    rows.append((f"eager, {n} single calls", f"{t_single * 1e3:.1f} ms", f"{n / t_single:,.0f} sym/s"))
    rows.append(("batching speed-up", f"{t_single / t_batch:.1f}x", ""))

    t0 = time.perf_counter()
    comp = InferenceEngine.from_bundle(args.model, device="cpu", compile=True, batch_buckets=(1, 8, 32, 128))
    start_s = time.perf_counter() - t0
    if comp.compiled:
        t_comp = _time(lambda: comp.predict(x, syms), args.repeat)
        out_c, _ = comp.predict(x, syms)
        out_e, _ = eager.predict(x, syms)
        diff = max(float(np.abs(out_c[s].raw - out_e[s].raw).max()) for s in syms)
        rows.append(
            (
                f"compiled, one batched forward, {n} symbols (padded to bucket {comp.bucket_for(n)})",
                f"{t_comp * 1e3:.1f} ms",
                f"{n / t_comp:,.0f} sym/s",
            )
        )
        rows.append(("compiled vs eager", f"{t_batch / t_comp:.2f}x", f"max abs raw difference {diff:.1e}"))
        # the same comparison without padding: a batch that fills the largest bucket exactly
        full = comp.batch_buckets[-1]
        xf = np.concatenate([x] * (full // n + 1))[:full]
        sf = [f"S{i}" for i in range(full)]
        t_ef = _time(lambda: eager.predict(xf, sf), args.repeat)
        t_cf = _time(lambda: comp.predict(xf, sf), args.repeat)
        rows.append(
            (
                f"compiled vs eager at a full bucket ({full} symbols)",
                f"{t_ef / t_cf:.2f}x",
                f"eager {t_ef * 1e3:.1f} ms, compiled {t_cf * 1e3:.1f} ms",
            )
        )
        rows.append(
            (
                "compile + warm-up of 4 buckets at start-up",
                f"{comp.compile_seconds:.1f} s",
                f"engine start {start_s:.1f} s",
            )
        )
    else:
        rows.append(("compiled", "failed", comp.compile_error or ""))
    rss_after = _rss_mb()

    if not args.no_hf:
        try:
            hf = hf_reference(eager.bundle.model_config, x.shape[2])
            xs = torch.from_numpy(eager.bundle.scaler.transform(x))
            with torch.inference_mode():
                t_hf = _time(lambda: hf(past_values=xs), max(2, args.repeat // 3))
            hf_params = sum(p.numel() for p in hf.parameters())
            rows.append(
                (
                    f"HF PatchTSTForClassification ({hf_params / 1e6:.2f} M params, channel-independent), {n} symbols",
                    f"{t_hf * 1e3:.1f} ms",
                    f"{n / t_hf:,.0f} sym/s",
                )
            )
        except ImportError as exc:
            rows.append(("HF PatchTSTForClassification", "not run", f"transformers not installed ({exc})"))

    rows.append(
        (
            "resident memory after loading the eager engine",
            f"{rss_loaded:.0f} MB",
            f"+{rss_loaded - rss0:.0f} MB for the bundle",
        )
    )
    rows.append(("resident memory with the compiled engine too", f"{rss_after:.0f} MB", ""))

    print(
        f"model {eager.model_version}: {n_params / 1e6:.2f} M params, input [{n}, {x.shape[1]}, {x.shape[2]}]; "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads, "
        f"median of {args.repeat}"
    )
    print()
    print("| measurement | time / value | throughput / note |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
