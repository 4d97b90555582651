"""Walk-forward backtest of the whole signal pipeline (see mlsignals/backtest/runner.py).

decisions: replay minute by minute through the live stages (features -> InferenceEngine ->
SignalSink/MLSignalProcessor); simulate: one position per symbol, fills, TP/SL/expiry, costs;
metrics: trade and equity statistics; baselines: buy-and-hold, flat, momentum, LR/LightGBM;
lookahead: decisions rerun on truncated candles; report: markdown + PNG plots.
"""
