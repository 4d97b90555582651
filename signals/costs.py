"""Trading costs assumed wherever a signal is turned into a net return: the backtest's simulator
and the live scorecard. One definition, in the signals layer, so both reach it downward."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CostModel:
    """fee_bps and slippage_bps per side, in basis points of the traded price."""

    fee_bps: float = 4.0
    slippage_bps: float = 1.0

    @property
    def fee(self) -> float:
        return self.fee_bps * 1e-4

    @property
    def slip(self) -> float:
        return self.slippage_bps * 1e-4
