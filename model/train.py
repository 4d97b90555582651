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

from model.config import ModelConfig, TrainConfig
from model.contract import DIRECTION_LOGITS, LONG_HIT_LOGITS, RETURNS, RISK, SHORT_HIT_LOGITS, TargetSpec
from model.dataset import AnchorPool
from model.patchtst import UnifiedPatchTST
from model.targets import LabelledTargets

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class LossWeights:
    """Fixed per-run constants of the multi-task loss (from the training split)."""

    class_weights: torch.Tensor  # [4, 3] inverse class frequency, mean 1 per horizon
    hit_pos_weight: torch.Tensor  # [8] negatives / positives of long then short hits
    blocks: tuple[float, float, float, float]  # returns, direction, hits, risk

    @classmethod
    def from_targets(cls, t: LabelledTargets, blocks: tuple[float, float, float, float]) -> LossWeights:
        shares = np.stack([np.bincount(t.direction[:, i], minlength=3) for i in range(4)]) / len(t)
        w = 1.0 / np.clip(shares, 1e-3, None)
        w = w / w.mean(axis=1, keepdims=True)
        hits = np.concatenate([t.long_hit.mean(axis=0), t.short_hit.mean(axis=0)])
        pos_w = (1 - hits) / np.clip(hits, 1e-3, None)
        return cls(torch.tensor(w, dtype=torch.float32), torch.tensor(pos_w, dtype=torch.float32), tuple(blocks))


def multitask_loss(
    raw: torch.Tensor, y: dict[str, torch.Tensor], model: UnifiedPatchTST, lw: LossWeights
) -> tuple[torch.Tensor, dict[str, float]]:
    """raw [B, 28]; y: returns [B,4], direction [B,4] long, hits [B,8], risk [B,4].

    Returns and risks are compared in units of their training scale (Huber), directions with
    class-weighted cross-entropy per horizon, level hits with weighted BCE.
    """
    rs, ks = model.return_scale, model.risk_scale
    l_ret = nn.functional.smooth_l1_loss(raw[:, RETURNS] / rs, y["returns"] / rs)
    logits = raw[:, DIRECTION_LOGITS].reshape(-1, 4, 3)
    l_dir = torch.stack(
        [nn.functional.cross_entropy(logits[:, i], y["direction"][:, i], weight=lw.class_weights[i]) for i in range(4)]
    ).mean()
    hit_logits = torch.cat([raw[:, LONG_HIT_LOGITS], raw[:, SHORT_HIT_LOGITS]], dim=1)
    l_hit = nn.functional.binary_cross_entropy_with_logits(hit_logits, y["hits"], pos_weight=lw.hit_pos_weight)
    l_risk = nn.functional.smooth_l1_loss(raw[:, RISK] / ks, y["risk"] / ks)
    b = lw.blocks
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
    return np.concatenate(out) if out else np.zeros((0, 28), dtype=np.float32)


def _val_loss(
    model: UnifiedPatchTST,
    pool: AnchorPool,
    rows: np.ndarray,
    yv: LabelledTargets,
    lw: LossWeights,
    device: torch.device,
) -> tuple[float, dict[str, float]]:
    raw = torch.from_numpy(predict_raw(model, pool, rows, device))
    with torch.no_grad():
        total, parts = multitask_loss(raw, target_tensors(yv, torch.device("cpu")), model.cpu(), lw)
    model.to(device)
    return float(total), parts


@dataclass
class FitResult:
    model: UnifiedPatchTST
    history: list[dict]
    best_epoch: int
    best_step: int
    seconds: float


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
    lw = LossWeights.from_targets(yt_all, cfg.loss_weights)
    model.to(dev)
    lw_dev = LossWeights(lw.class_weights.to(dev), lw.hit_pos_weight.to(dev), lw.blocks)
    n_epoch = len(train_rows) if cfg.samples_per_epoch <= 0 else min(cfg.samples_per_epoch, len(train_rows))
    steps_per_epoch = max(1, n_epoch // cfg.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=steps_per_epoch * cfg.epochs, pct_start=0.1
    )
    vsel = (
        val_rows if len(val_rows) <= cfg.val_samples else np.sort(rng.choice(val_rows, cfg.val_samples, replace=False))
    )
    yv = pool.labels(vsel, spec)
    best, best_epoch, best_state, history, bad = np.inf, -1, None, [], 0
    best_step = 0
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
            x = augment(torch.from_numpy(pool.windows(rows)).to(dev), cfg.input_noise, cfg.feature_dropout)
            y = target_tensors(yt_all.take(idx), dev)
            loss, _ = multitask_loss(model(x), y, model, lw_dev)
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
            vloss, parts = _val_loss(model, pool, vsel, yv, lw, dev)
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
    assert best_state is not None
    model.load_state_dict(best_state)
    model.cpu().eval()
    return FitResult(model, history, best_epoch, best_step, time.perf_counter() - t0)
