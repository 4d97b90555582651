"""Backtests and evaluations as Ray tasks: ``mlsignals backtest|evaluate --ray [ADDRESS]``.

Where the time goes, and what is split:

* features - one task per symbol, over that symbol's whole history (BTC's candles shared through
  the object store). Not split in time: the recursive indicators (EMAs, ...) carry their seed for
  ever, so a time chunk with a finite warm-up agrees with the full-history rows to ~1e-7 only
  (``features.spec.live_window``), and "identical to the local run" means bit for bit.
* the model forward (+ the signal of every minute for the backtest) - the bulk of the time - one
  task per time chunk. A chunk carries its warm-up: the feature rows of the model's context
  before its first minute (bar_minutes * (context - 1) grid rows), so every window it reads is the
  window the local run reads. Chunk boundaries are multiples of the local run's batch (the
  backtest's ``chunk_minutes``, ``model.train.predict_raw``'s 1024 rows): every task runs exactly
  the forwards the local run does, with the same batch composition, on 1 torch thread.
* everything sequential or cheap stays in the driver, on the merged (concatenated in order)
  arrays: the trade simulation (open positions cross chunk boundaries), the baselines, the
  look-ahead check, the bundle's direction stack (LightGBM), the scores and bootstrap intervals
  of ``evaluate``.

``RayOptions.address``: ``"local"`` starts a Ray on this machine with ``workers`` CPUs; anything
else goes to ``ray.init(address=...)`` ("auto", "HOST:6379", "ray://HOST:10001"). A Ray already
initialised in this process (the tests' shared instance) is used as it is and left running.
The project must be installed on every node of a cluster (same image); data and the model travel
through the object store, so the nodes need no shared disk.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import ray

from common.errors import MLSignalsError
from features.calculator import find_btc
from mlsignals.backtest.decisions import Decisions, Market, PrecomputedFeatures, replay
from mlsignals.backtest.runner import on_grid

LOCAL = "local"
EVAL_BATCH = 1024  # model.train.predict_raw's batch: evaluation chunks are multiples of it


@dataclass(frozen=True)
class RayOptions:
    """address: "local" (a Ray started here with ``workers`` CPUs) or a cluster address;
    task_minutes: backtest decision minutes per task (rounded down to a multiple of the replay's
    chunk_minutes); task_rows: evaluation rows per task (rounded down to a multiple of 1024)."""

    address: str = LOCAL
    workers: int = 2
    task_minutes: int = 2048
    task_rows: int = 8 * EVAL_BATCH


@contextmanager
def ray_session(opts: RayOptions) -> Iterator[None]:
    if ray.is_initialized():  # the caller's Ray (tests share one per session): use it, leave it
        yield
        return
    if opts.workers < 1:
        raise MLSignalsError("--workers must be >= 1")
    if opts.address == LOCAL:
        ray.init(address="local", num_cpus=opts.workers, include_dashboard=False, log_to_driver=False)
    else:
        try:
            ray.init(address=opts.address, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise MLSignalsError(f"cannot connect to Ray at {opts.address!r}: {exc}") from None
    try:
        yield
    finally:
        ray.shutdown()


# ---------------------------------------------------------------------------- chunking
def task_ranges(n: int, per_task: int, align: int) -> list[tuple[int, int]]:
    """[a, b) ranges over 0 .. n-1, in order, each index once; every ``a`` is a multiple of
    ``align`` (so a task's batches are the local run's batches) and a task holds ``per_task``
    rounded down to a multiple of ``align`` (at least one ``align``)."""
    if n <= 0:
        return []
    step = max(align, per_task // align * align)
    return [(a, min(a + step, n)) for a in range(0, n, step)]


def with_warmup(first: int, last: int, warmup: int) -> tuple[int, int]:
    """Grid rows a chunk of minutes ``first`` .. ``last`` needs: ``warmup`` rows before the first
    (the model's context), clipped at the start of the data; inclusive."""
    return max(0, first - warmup), last


# ---------------------------------------------------------------------------- task side
_CACHE: dict[str, object] = {}


def _shared(box: list) -> object:
    """The object behind ``box[0]`` (an ObjectRef, wrapped so Ray does not resolve it per
    task), deserialised once per worker process and run."""
    key = box[0].hex()
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = ray.get(box[0])
    return _CACHE[key]


def _symbol_features(candles: pd.DataFrame, btc: pd.DataFrame, symbol: str, bar_minutes: int):
    from model.series import anchor_feature_matrix

    t0 = time.perf_counter()
    x = anchor_feature_matrix(candles, btc, symbol, bar_minutes)
    return x, time.perf_counter() - t0


@dataclass
class ReplayChunk:
    """One backtest task: decision minutes ``positions`` (on ``market``, a slice of the full grid
    from position ``lo`` on, warm-up rows included) with the feature rows of that slice."""

    lo: int
    market: Market
    features: dict[str, np.ndarray]
    first: dict[str, int]
    positions: np.ndarray
    bar_minutes: int
    context: int
    required_minutes: int
    chunk_minutes: int

    def run(self, engine, sink) -> Decisions:
        """The chunk's decisions, positions on the full grid (``replay`` on the slice)."""
        stage = PrecomputedFeatures(self.market, self.features, self.bar_minutes, self.context,
                                    self.required_minutes, first=self.first)
        d, _ = replay(stage, engine, sink, self.positions, self.chunk_minutes, progress=False)
        return d.shifted(self.lo)


def replay_chunks(stage: PrecomputedFeatures, positions: np.ndarray, task_minutes: int,
                  chunk_minutes: int) -> list[ReplayChunk]:
    """Split ``replay(stage, ..., positions, chunk_minutes)`` into tasks of about ``task_minutes``
    decision minutes, each with the context rows before its first minute."""
    first, warm = stage.first_positions, stage.warmup_minutes
    out = []
    for a, b in task_ranges(len(positions), task_minutes, chunk_minutes):
        pos = positions[a:b]
        lo, hi = with_warmup(int(pos[0]), int(pos[-1]), warm)
        out.append(ReplayChunk(
            lo, stage.market.slice(lo, hi), {s: stage.features[s][lo : hi + 1] for s in stage.market.symbols},
            {s: f - lo for s, f in first.items()}, pos - lo, stage.bar_minutes, stage.context,
            stage.required_minutes, chunk_minutes))
    return out


def _replay_chunk(box: list, chunk: ReplayChunk, threads: int):
    import torch

    torch.set_num_threads(max(1, threads))
    t0 = time.perf_counter()
    engine, sink = _shared(box)
    return chunk.run(engine, sink), time.perf_counter() - t0


def _symbol_series(symbol: str, candles: pd.DataFrame, btc: pd.DataFrame, is_btc: bool, period: str,
                   bar_minutes: int, horizons: tuple[int, ...]):
    """``model.series.build_series``'s work for one symbol (alignments=0, the evaluation's)."""
    from model.series import Series, anchor_feature_matrix, candle_timeframe, volatility_columns
    from model.targets import minute_grid, raw_targets_all_anchors

    t0 = time.perf_counter()
    tf = candle_timeframe(candles)
    if not is_btc:
        candles = candles.loc[max(candles.index[0], btc.index[0]) : min(candles.index[-1], btc.index[-1])]
        missing = ~candles.index.isin(btc.index)
        if missing.any():
            candles = candles[~missing]
    if len(candles) < 2:
        return None, time.perf_counter() - t0
    x = anchor_feature_matrix(candles, None if is_btc else btc, symbol, bar_minutes)
    grid = minute_grid(candles, tf)
    raw = raw_targets_all_anchors(candles, bar_minutes, horizons, tf)
    vol = volatility_columns(grid, bar_minutes, tf)
    return Series(symbol, period, grid.index, x, raw, vol, step=bar_minutes // tf), time.perf_counter() - t0


def _predict_chunk(box: list, unscaled: np.ndarray, steps: np.ndarray, scaler, context: int, rows: np.ndarray,
                   device: str, threads: int):
    import torch

    from model.dataset import AnchorPool
    from model.train import predict_raw

    torch.set_num_threads(max(1, threads))
    t0 = time.perf_counter()
    model = _shared(box)
    pool = AnchorPool(unscaled=unscaled, raw=None, vol=None, times=None, series_id=None, symbols=[],
                      valid=rows, context=context, steps=steps, scaler=scaler)
    model.to(torch.device(device))
    raw = predict_raw(model, pool, rows, torch.device(device), batch_size=EVAL_BATCH)
    return raw, time.perf_counter() - t0


# ---------------------------------------------------------------------------- driver side
@dataclass
class _Stats:
    """Per stage: tasks, wall seconds in the driver, seconds inside the tasks (sum, max)."""

    stages: dict = field(default_factory=dict)

    def add(self, name: str, wall: float, task_seconds: list[float]) -> None:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = len(task_seconds)
        busy = sum(task_seconds)
        self.stages[name] = {
            "tasks": n, "cpus": cpus, "wall_s": round(wall, 3), "task_s_sum": round(busy, 3),
            "task_s_max": round(max(task_seconds, default=0.0), 3),
            # CPU time the stage held beyond the tasks' own work (scheduling, transfers, model
            # deserialisation, idle tail), per task
            "overhead_per_task_ms": round(1e3 * max(0.0, min(cpus, n) * wall - busy) / max(n, 1), 1),
        }


def _gather(refs: list, desc: str, progress: bool) -> list:
    from tqdm import tqdm

    pending = list(refs)
    with tqdm(total=len(refs), desc=desc, unit="task", disable=not progress, mininterval=2.0) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            bar.update(len(done))
    return ray.get(refs)


def _remote(fn, **options):
    return ray.remote(num_cpus=1, max_retries=2, **options)(fn)


class RayBacktest:
    """``run_backtest``'s executor: features per symbol, replay per time chunk, as Ray tasks
    (Ray must be initialised: ``ray_session``)."""

    def __init__(self, opts: RayOptions = RayOptions()) -> None:
        self.opts = opts
        self.stats = _Stats()

    def features(self, frames: dict[str, pd.DataFrame], market: Market, bar_minutes: int) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        btc = ray.put(frames[find_btc(list(frames))])
        task = _remote(_symbol_features)
        out = _gather([task.remote(frames[s], btc, s, bar_minutes) for s in market.symbols], "features", False)
        self.stats.add("features", time.perf_counter() - t0, [sec for _, sec in out])
        return {s: on_grid(x, frames[s], market) for s, (x, _) in zip(market.symbols, out, strict=True)}

    def replay(self, stage: PrecomputedFeatures, engine, sink, positions: np.ndarray, cfg) -> Decisions:
        t0 = time.perf_counter()
        box = [ray.put((engine, sink))]
        task = _remote(_replay_chunk)
        refs = [task.remote(box, c, cfg.torch_threads)
                for c in replay_chunks(stage, positions, self.opts.task_minutes, cfg.chunk_minutes)]
        out = _gather(refs, "backtest", cfg.progress)
        self.stats.add("replay", time.perf_counter() - t0, [sec for _, sec in out])
        return Decisions.concat([d for d, _ in out])

    def report(self) -> dict:
        return {"address": self.opts.address, "task_minutes": self.opts.task_minutes, **self.stats.stages}


def run_backtest_ray(frames: dict[str, pd.DataFrame], cfg, opts: RayOptions = RayOptions()):
    """``run_backtest`` with its features and replay as Ray tasks; the same result."""
    from mlsignals.backtest.runner import run_backtest

    with ray_session(opts):
        return run_backtest(frames, cfg, executor=RayBacktest(opts))


def evaluate_candles_ray(model_dir: Path, candle_files: list[Path], stride: int = 7, device: str = "cpu",
                         opts: RayOptions = RayOptions(), spec_hash: str | None = None):
    """``model.evaluate.evaluate_candles`` with the per-symbol series and the model forward as
    Ray tasks: the same (EvalResult, Bundle), and the task statistics."""
    from model.baselines import Baselines
    from model.bundle import load_bundle
    from model.evaluate import load_eval_frames, result_from_raw, scored_rows

    bundle = load_bundle(model_dir, spec_hash=spec_hash)
    baselines = Baselines.load(bundle.path)
    frames = load_eval_frames(candle_files)
    bm, ctx, horizons = bundle.bar_minutes, bundle.context_length, bundle.target_spec.horizons
    stats = _Stats()
    with ray_session(opts):
        t0 = time.perf_counter()
        btc_name = find_btc(list(frames))
        if btc_name is None:
            raise MLSignalsError("cross-asset features need BTC candles over the same minutes; add the BTC file")
        btc = ray.put(frames[btc_name])
        task = _remote(_symbol_series)
        out = _gather([task.remote(s, c, btc, s == btc_name, "eval", bm, horizons) for s, c in sorted(frames.items())],
                      "series", False)
        stats.add("series", time.perf_counter() - t0, [sec for _, sec in out])
        series = [s for s, _ in out if s is not None]
        pool, rows = scored_rows(series, bundle, stride)
        t0 = time.perf_counter()
        box = [ray.put(bundle.model)]
        task = _remote(_predict_chunk, num_gpus=1 if device.startswith("cuda") else 0)
        refs = []
        for a, b in task_ranges(len(rows), opts.task_rows, EVAL_BATCH):
            r = rows[a:b]  # sorted: the chunk's windows lie in rows r[0] - warm-up .. r[-1]
            lo, hi = with_warmup(int(r[0]), int(r[-1]), int(pool.steps[r].max()) * (ctx - 1))
            if (r - pool.steps[r] * (ctx - 1)).min() < 0:  # a window that wraps (never valid): all rows
                lo, hi = 0, len(pool.steps) - 1
            refs.append(task.remote(box, pool.unscaled[lo : hi + 1], pool.steps[lo : hi + 1], bundle.scaler, ctx,
                                    r - lo, device, 1))
        parts = _gather(refs, "evaluate", False)
        stats.add("forward", time.perf_counter() - t0, [sec for _, sec in parts])
    raw = np.concatenate([p for p, _ in parts]) if parts else np.zeros((0, 28), dtype=np.float32)
    if bundle.stack is not None:  # model.evaluate.model_raw: the stack on the merged rows, here
        raw = bundle.stack.apply_on_pool(raw, pool, rows)
    result = result_from_raw(raw, bundle.scaler, bundle.target_spec, baselines, pool, rows)
    return result, bundle, {"address": opts.address, "task_rows": opts.task_rows, **stats.stages}
