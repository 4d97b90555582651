"""Training of UnifiedPatchTST: multi-task loss, seeded epochs, early stopping on validation.

``fit_model`` works on an ``AnchorPool`` (any features, so unit tests can use synthetic ones);
``train_bundle`` (model/pipeline step in ``model.training_run``) loads candles, builds features,
splits, fits the scaler, the model and the baselines, and writes the bundle.
"""

from __future__ import annotations

import copy
import logging
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from model.calibration import fit_calibration
from model.config import ModelConfig, TrainConfig
from model.contract import (
    DIRECTION_LOGITS,
    LONG_HIT_LOGITS,
    N_CLASSES,
    N_HORIZONS,
    RAW_SIZE,
    RETURNS,
    RISK,
    SHORT_HIT_LOGITS,
    TargetSpec,
)
from model.dataset import AnchorPool
from model.patchtst import UnifiedPatchTST
from model.targets import LabelledTargets

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def multitask_loss(
    raw: torch.Tensor, y: dict[str, torch.Tensor], model: UnifiedPatchTST, blocks: tuple[float, float, float, float]
) -> tuple[torch.Tensor, dict[str, float]]:
    """raw [B, 28]; y: returns [B,4], direction [B,4] long, hits [B,8], risk [B,4].

    The plain likelihood: unweighted cross-entropy per horizon for directions and unweighted
    binary cross-entropy for level hits (class weights or ``pos_weight`` would train the network
    to output distorted probabilities); returns and risks in units of their training scale (Huber).
    """
    rs, ks = model.return_scale, model.risk_scale
    l_ret = nn.functional.smooth_l1_loss(raw[:, RETURNS] / rs, y["returns"] / rs)
    logits = raw[:, DIRECTION_LOGITS].reshape(-1, N_HORIZONS, N_CLASSES)
    l_dir = nn.functional.cross_entropy(logits.reshape(-1, N_CLASSES), y["direction"].reshape(-1))
    hit_logits = torch.cat([raw[:, LONG_HIT_LOGITS], raw[:, SHORT_HIT_LOGITS]], dim=1)
    l_hit = nn.functional.binary_cross_entropy_with_logits(hit_logits, y["hits"])
    l_risk = nn.functional.smooth_l1_loss(raw[:, RISK] / ks, y["risk"] / ks)
    b = blocks
    total = b[0] * l_ret + b[1] * l_dir + b[2] * l_hit + b[3] * l_risk
    parts = {
        k: float(v.detach()) for k, v in (("returns", l_ret), ("direction", l_dir), ("hits", l_hit), ("risk", l_risk))
    }
    return total, parts


def target_tensors(t: LabelledTargets, device: torch.device) -> dict[str, torch.Tensor]:
    f = torch.float32
    return {
        "returns": torch.as_tensor(t.returns, dtype=f, device=device),
        "direction": torch.as_tensor(t.direction, dtype=torch.long, device=device),
        "hits": torch.as_tensor(np.concatenate([t.long_hit, t.short_hit], axis=1), dtype=f, device=device),
        "risk": torch.as_tensor(t.risk, dtype=f, device=device),
    }


def augment(x: torch.Tensor, noise: float, feature_dropout: float) -> torch.Tensor:
    """Training-only input regularisation on x [B, C, F] (uses the seeded torch RNG)."""
    if noise > 0:
        x = x + noise * torch.randn_like(x)
    if feature_dropout > 0:
        keep = (torch.rand(x.shape[0], 1, x.shape[2], device=x.device) >= feature_dropout).to(x.dtype)
        x = x * keep
    return x


@torch.inference_mode()
def predict_raw(
    model: nn.Module, pool: AnchorPool, rows: np.ndarray, device: torch.device, batch_size: int = 1024
) -> np.ndarray:
    """Raw outputs [N, 28] for pool rows (eval mode)."""
    model.eval()
    out = []
    for s in range(0, len(rows), batch_size):
        x = torch.from_numpy(pool.windows(rows[s : s + batch_size])).to(device)
        out.append(model(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, RAW_SIZE), dtype=np.float32)


@torch.inference_mode()
def predict_parts(
    model: UnifiedPatchTST, pool: AnchorPool, rows: np.ndarray, device: torch.device, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """(base pre-activations, network residual) [N, 28] each, float64 (for calibration)."""
    model.eval()
    base, res = [], []
    for s in range(0, len(rows), batch_size):
        x = torch.from_numpy(pool.windows(rows[s : s + batch_size])).to(device)
        base.append(model.base_pre(x).double().cpu().numpy())
        res.append(model.residual(x).double().cpu().numpy())
    return np.concatenate(base), np.concatenate(res)


def _val_loss(
    model: UnifiedPatchTST,
    pool: AnchorPool,
    rows: np.ndarray,
    yv: LabelledTargets,
    blocks: tuple[float, float, float, float],
    device: torch.device,
) -> tuple[float, dict[str, float]]:
    raw = torch.from_numpy(predict_raw(model, pool, rows, device))
    with torch.no_grad():
        total, parts = multitask_loss(raw, target_tensors(yv, torch.device("cpu")), model.cpu(), blocks)
    model.to(device)
    return float(total), parts


def fit_base(
    model: UnifiedPatchTST, pool: AnchorPool, rows: np.ndarray, t: LabelledTargets, cfg: TrainConfig
) -> list[float]:
    """Fit the direction-blind base alone (network residual held at zero) on the last feature
    row (and the log-volatility columns of the window) of each training anchor: Adam on
    batches of 4096, ``cfg.base_steps`` steps."""
    if model.base is None or cfg.base_steps <= 0:
        return []
    rng = np.random.default_rng(cfg.seed + 1)
    history_cols = model.base.history.tolist()
    if history_cols:
        sample = rows[rng.choice(len(rows), min(50_000, len(rows)), replace=False)]
        model.base.set_history_scaling(
            torch.tensor(pool.scaler.mean[history_cols], dtype=torch.float32),
            torch.tensor(pool.scaler.scale[history_cols], dtype=torch.float32),
            torch.from_numpy(pool.scaled_windows(sample, history_cols)),
        )
    opt = torch.optim.Adam(model.base.parameters(), lr=3e-3)
    y_all = target_tensors(t, torch.device("cpu"))
    history = []
    model.train()
    for step in range(cfg.base_steps):
        idx = rng.choice(len(rows), min(4096, len(rows)), replace=False)
        last = torch.from_numpy(pool.scaled(rows[idx]))
        history_x = torch.from_numpy(pool.scaled_windows(rows[idx], history_cols))
        raw = model.finish(model.base(last, history_x))
        loss, _ = multitask_loss(raw, {k: v[idx] for k, v in y_all.items()}, model, cfg.loss_weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == cfg.base_steps - 1:
            history.append(float(loss.detach()))
    model.eval()
    return history


@dataclass
class FitResult:
    model: UnifiedPatchTST
    history: list[dict]
    best_epoch: int
    best_step: int
    seconds: float
    calibration: dict


def fit_model(
    pool: AnchorPool,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    spec: TargetSpec,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    device: str = "cpu",
    progress: bool = True,
) -> FitResult:
    """Train with AdamW + cosine schedule, keep the weights of the best validation epoch."""
    seed_everything(cfg.seed)
    dev = torch.device(device)
    rng = np.random.default_rng(cfg.seed)
    yt_all = pool.labels(train_rows, spec)
    model = UnifiedPatchTST(model_cfg)
    model.set_target_scales(
        torch.tensor(np.std(yt_all.returns, axis=0) + 1e-8, dtype=torch.float32),
        torch.tensor(np.mean(yt_all.risk, axis=0) + 1e-8, dtype=torch.float32),
    )
    blocks = tuple(cfg.loss_weights)
    base_history = fit_base(model, pool, train_rows, yt_all, cfg)
    if model.base is not None:
        model.base.requires_grad_(False)  # the residual network trains on a fixed base
    model.to(dev)
    n_epoch = len(train_rows) if cfg.samples_per_epoch <= 0 else min(cfg.samples_per_epoch, len(train_rows))
    steps_per_epoch = max(1, n_epoch // cfg.batch_size)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=steps_per_epoch * cfg.epochs, pct_start=0.1
    )
    vsel = (
        val_rows if len(val_rows) <= cfg.val_samples else np.sort(rng.choice(val_rows, cfg.val_samples, replace=False))
    )
    yv = pool.labels(vsel, spec)
    # step 0: the base alone (residual heads are zero) - the network must beat it to be kept
    best, _ = _val_loss(model, pool, vsel, yv, blocks, dev)
    best_epoch, best_state, bad, best_step = 0, copy.deepcopy(model.state_dict()), 0, 0
    history = [{"epoch": 0, "step": 0, "train_loss": None, "val_loss": best, "base_fit": base_history}]
    eval_every = cfg.eval_every_steps or steps_per_epoch
    t0 = time.perf_counter()
    step_total, stop = 0, False
    for epoch in range(cfg.epochs):
        model.train()
        order = rng.choice(len(train_rows), steps_per_epoch * cfg.batch_size, replace=n_epoch > len(train_rows))
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False)
        run = 0.0
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            rows = train_rows[idx]
            x = torch.from_numpy(pool.windows(rows)).to(dev)
            y = target_tensors(yt_all.take(idx), dev)
            raw = model(x, augment(x, cfg.input_noise, cfg.feature_dropout))
            loss, _ = multitask_loss(raw, y, model, blocks)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            lv = float(loss.detach())
            run = 0.98 * run + 0.02 * lv if step else lv
            bar.set_postfix(loss=f"{run:.4f}")
            step_total += 1
            if step_total % eval_every and step != steps_per_epoch - 1:
                continue
            # validation: every ``eval_every`` steps and at the end of each epoch
            vloss, parts = _val_loss(model, pool, vsel, yv, blocks, dev)
            model.train()
            history.append(
                {
                    "epoch": epoch + 1,
                    "step": step_total,
                    "train_loss": run,
                    "val_loss": vloss,
                    **{f"val_{k}": v for k, v in parts.items()},
                }
            )
            log.info("step %d train %.4f val %.4f %s", step_total, run, vloss, parts)
            if progress:
                tqdm.write(
                    f"step {step_total} (epoch {epoch + 1}): train {run:.4f}  val {vloss:.4f}  "
                    + " ".join(f"{k}={v:.4f}" for k, v in parts.items())
                )
            if vloss < best - 1e-5:
                best, best_epoch, best_step, bad = vloss, epoch + 1, step_total, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
                if bad > cfg.patience:
                    stop = True
                    break
        if stop:
            break
    model.load_state_dict(best_state)
    model.cpu().eval()
    cal_rows = val_rows if len(val_rows) <= cfg.calibration_samples else np.sort(
        rng.choice(val_rows, cfg.calibration_samples, replace=False))
    base, res = predict_parts(model, pool, cal_rows, torch.device("cpu"))
    cal = fit_calibration(base, res, pool.labels(cal_rows, spec), model.return_scale.numpy().astype(np.float64),
                          model.risk_scale.numpy().astype(np.float64))
    model.residual_weight.copy_(torch.tensor(cal.residual_weight, dtype=torch.float32))
    model.inv_temperature.copy_(torch.tensor(cal.inv_temperature, dtype=torch.float32))
    return FitResult(model, history, best_epoch, best_step, time.perf_counter() - t0, cal.report)
