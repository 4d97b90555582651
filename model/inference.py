"""The Ray-free inference core: a verified bundle on a device, one batched forward per tick.

``InferenceEngine.from_bundle`` loads and verifies the bundle, picks the device, optionally
``torch.compile``s the network and warms it up on the batch-size buckets it will serve (a
batch is zero-padded to the next bucket so a compiled graph never meets a new shape), and
falls back to eager execution with a logged reason when compiling fails. ``predict`` takes
unscaled feature windows of many symbols and returns the contract per symbol; a symbol with
NaN/inf input gets an error entry instead of taking the batch down. The MLManager Serve
deployment wraps this class; nothing here imports ray.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from common.errors import ConfigError, ModelInputError
from model.bundle import Bundle, load_bundle
from model.contract import ModelOutput

log = logging.getLogger(__name__)


def pick_device(device: str) -> torch.device:
    """auto -> cuda when available, else cpu; an explicit cuda without CUDA is a config error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model device 'cuda' requested but CUDA is not available; use 'auto' or 'cpu'")
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"model device must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


class InferenceEngine:
    """Serve one bundle. Attributes: model_version, spec_hash, target_spec, context_length,
    bar_minutes, feature_names, feature_stats, device, compiled, compile_seconds, compile_error."""

    def __init__(
        self,
        bundle: Bundle,
        device: str = "auto",
        compile: bool = True,
        batch_buckets: Sequence[int] = (1, 8, 32, 128),
    ) -> None:
        if not batch_buckets or any(b < 1 for b in batch_buckets):
            raise ConfigError(f"batch_buckets must be positive integers, got {list(batch_buckets)}")
        self.bundle = bundle
        self.model_version = bundle.model_version
        self.spec_hash = bundle.spec_hash
        self.target_spec = bundle.target_spec
        self.context_length = bundle.context_length
        self.bar_minutes = bundle.bar_minutes
        self.feature_names = bundle.feature_names
        self.feature_stats = bundle.feature_stats
        self.n_features = len(bundle.feature_names)
        self.device = pick_device(device)
        self.batch_buckets = tuple(sorted(set(int(b) for b in batch_buckets)))
        self._mean = torch.tensor(bundle.scaler.mean, dtype=torch.float32, device=self.device)
        self._scale = torch.tensor(bundle.scaler.scale, dtype=torch.float32, device=self.device)
        self._clip = float(bundle.scaler.clip)
        self._eager = bundle.model.to(self.device).eval()
        self._forward = self._eager
        self.compiled = False
        self.compile_seconds = 0.0
        self.compile_error: str | None = None
        if compile:
            self._try_compile()

    @classmethod
    def from_bundle(
        cls,
        path: str | Path,
        device: str = "auto",
        compile: bool = True,
        batch_buckets: Sequence[int] = (1, 8, 32, 128),
        spec_hash: str | None = None,
    ) -> InferenceEngine:
        """Verify and load ``path`` (see ``model.bundle.load_bundle``) and build the engine."""
        return cls(load_bundle(path, spec_hash=spec_hash), device, compile, batch_buckets)

    def _try_compile(self) -> None:
        t0 = time.perf_counter()
        try:
            fn = torch.compile(self._eager, dynamic=False)
            with torch.inference_mode():
                for b in self.batch_buckets:  # one graph per bucket, built now and not at the first tick
                    x = torch.zeros(b, self.context_length, self.n_features, device=self.device)
                    fn(x)
        except Exception as exc:  # noqa: BLE001 - any compiler failure means: serve eager
            self.compile_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("torch.compile failed, serving eager instead (%s)", self.compile_error)
            self._forward = self._eager
            self.compiled = False
        else:
            self._forward = fn
            self.compiled = True
        self.compile_seconds = time.perf_counter() - t0

    def bucket_for(self, n: int) -> int:
        """The smallest configured bucket >= n (the largest one for bigger batches, which are chunked)."""
        for b in self.batch_buckets:
            if b >= n:
                return b
        return self.batch_buckets[-1]

    def forward_raw(self, values: np.ndarray) -> np.ndarray:
        """values [B, C, F] unscaled finite features -> raw [B, 28] (chunks of the largest bucket)."""
        out = []
        step = self.batch_buckets[-1]
        with torch.inference_mode():
            for s in range(0, values.shape[0], step):
                chunk = torch.from_numpy(np.ascontiguousarray(values[s : s + step], dtype=np.float32))
                x = chunk.to(self.device)
                x = torch.clamp((x - self._mean) / self._scale, -self._clip, self._clip)
                n = x.shape[0]
                if self.compiled and n != self.bucket_for(n):
                    x = torch.cat([x, x.new_zeros(self.bucket_for(n) - n, *x.shape[1:])])
                out.append(self._forward(x)[:n].float().cpu().numpy())
        raw = np.concatenate(out) if out else np.zeros((0, 28), dtype=np.float32)
        stack = self.bundle.stack  # LightGBM pooled into the direction logits (model.stacking)
        return raw if stack is None else stack.apply_on_windows(raw, values)

    def _check_shape(self, values: np.ndarray, symbols: Sequence[str]) -> None:
        want = (len(symbols), self.context_length, self.n_features)
        if values.ndim != 3 or values.shape != want:
            raise ModelInputError(
                f"model input must be [symbols={want[0]}, context={want[1]}, features={want[2]}], got "
                f"{list(values.shape)}"
            )

    def predict(self, values: np.ndarray, symbols: Sequence[str]) -> tuple[dict[str, ModelOutput], dict[str, str]]:
        """values [S, context, F] float32 unscaled features (oldest bar first), one row per symbol.

        Returns (outputs per symbol, errors per symbol). A wrong overall shape raises
        ``ModelInputError`` (a caller bug); a symbol with NaN/inf values is reported in errors.
        """
        values = np.asarray(values)
        self._check_shape(values, symbols)
        finite = np.isfinite(values)
        ok = finite.all(axis=(1, 2))
        errors: dict[str, str] = {}
        for i in np.flatnonzero(~ok):
            bad_cols = np.flatnonzero(~finite[i].all(axis=0))
            names = ", ".join(self.feature_names[c] for c in bad_cols[:3])
            errors[symbols[i]] = (
                f"ModelInputError: {int((~finite[i]).sum())} NaN/inf value(s) in the feature window "
                f"({len(bad_cols)} feature(s), e.g. {names})"
            )
        outputs: dict[str, ModelOutput] = {}
        good = np.flatnonzero(ok)
        if good.size:
            raw = self.forward_raw(values[good])
            for row, i in zip(raw, good, strict=True):
                out = ModelOutput.from_raw(row)
                if out.is_finite():
                    outputs[symbols[i]] = out
                else:
                    errors[symbols[i]] = "ModelInputError: the model produced non-finite outputs for this input"
        return outputs, errors
