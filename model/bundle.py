"""The model artifact bundle ``models/<name>/``: save, verify, load. No pickle anywhere.

Files:
    weights.safetensors   network weights (safetensors: tensors only, no code)
    preprocessing.npz     scaler + per-feature training statistics (np.load allow_pickle=False)
    config.json           ModelConfig, TargetSpec, feature names, feature SPEC_HASH, training
                          config, data range, seed
    metrics.json          validation (and later held-out) metrics
    baselines.json, baseline_lgbm_h*.txt   baselines as plain numbers / LightGBM text models
    stack.json            optional: LightGBM and a volatility forecast stacked into the outputs (model.stacking)
    policy.json           optional: the validated trading policy (signals.policy)
    manifest.json         sha256 of every other file (written last)

``load_bundle`` verifies every checksum and the feature spec hash and raises ``ArtifactError``
naming the file or value to fix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from common.errors import ArtifactError
from model.config import ModelConfig
from model.contract import TargetSpec
from model.patchtst import UnifiedPatchTST
from model.scaler import FeatureScaler, FeatureStats, load_preprocessing, save_preprocessing
from model.stacking import STACK_JSON, OutputStack

WEIGHTS = "weights.safetensors"
PREPROCESSING = "preprocessing.npz"
CONFIG = "config.json"
METRICS = "metrics.json"
POLICY = "policy.json"  # the validated trading policy (signals.policy); optional
OPTIONAL = (POLICY, STACK_JSON)  # signed by the manifest when present
MANIFEST = "manifest.json"
REQUIRED = (WEIGHTS, PREPROCESSING, CONFIG, METRICS)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(root: Path) -> dict[str, str]:
    """(Re)write manifest.json with the sha256 of every file under ``root`` but itself."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    sums = {p.relative_to(root).as_posix(): sha256_file(p) for p in files}
    (root / MANIFEST).write_text(json.dumps({"algorithm": "sha256", "files": sums}, indent=2) + "\n")
    return sums


def verify_manifest(root: Path) -> None:
    mpath = root / MANIFEST
    if not mpath.exists():
        raise ArtifactError(f"{root}: no {MANIFEST}; not a model bundle (train one with `mlsignals train`)")
    try:
        sums = json.loads(mpath.read_text())["files"]
    except (ValueError, KeyError) as exc:
        raise ArtifactError(f"{mpath}: unreadable manifest ({exc})") from None
    for name in REQUIRED:
        if name not in sums:
            raise ArtifactError(f"{mpath}: {name} is not listed; the bundle is incomplete")
    for name in OPTIONAL:
        if (root / name).exists() and name not in sums:
            raise ArtifactError(f"{mpath}: {name} is present but not signed by the manifest")
    for name, expected in sums.items():
        p = root / name
        if not p.exists():
            raise ArtifactError(f"{root}: {name} is listed in the manifest but missing")
        if sha256_file(p) != expected:
            raise ArtifactError(f"{p}: sha256 does not match the manifest (file changed or corrupted)")


@dataclass
class Bundle:
    """A verified, loaded bundle. ``model`` is in eval mode on the CPU."""

    path: Path
    name: str
    model: UnifiedPatchTST
    model_config: ModelConfig
    target_spec: TargetSpec
    feature_names: list[str]
    spec_hash: str
    scaler: FeatureScaler
    feature_stats: FeatureStats
    metrics: dict[str, Any]
    config: dict[str, Any]
    model_version: str
    # the validated trading policy (signals.policy), raw JSON; None when the bundle has none
    policy: dict[str, Any] | None = None
    # LightGBM (direction) and a feature-volatility forecast (hits, risk) stacked into the outputs;
    # None when the bundle has none
    stack: OutputStack | None = None

    @property
    def context_length(self) -> int:
        return self.model_config.context_length

    @property
    def bar_minutes(self) -> int:
        return self.target_spec.bar_minutes


def save_bundle(
    out: Path,
    model: UnifiedPatchTST,
    target_spec: TargetSpec,
    feature_names: list[str],
    spec_hash: str,
    scaler: FeatureScaler,
    stats: FeatureStats,
    train_info: dict[str, Any],
    metrics: dict[str, Any],
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write every file and the manifest; returns ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
    save_preprocessing(out / PREPROCESSING, scaler, stats)
    config = {
        "model": model.cfg.to_dict(),
        "target_spec": target_spec.to_dict(),
        "feature_names": list(feature_names),
        "spec_hash": spec_hash,
        "train": train_info,
    }
    (out / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    (out / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    for name, text in (extra_files or {}).items():
        (out / name).write_text(text)
    write_manifest(out)
    return out


def _current_spec_hash() -> str:
    try:
        from features.spec import SPEC_HASH
    except ImportError as exc:
        raise ArtifactError(f"cannot read the current feature spec hash ({exc})") from None
    return SPEC_HASH


def load_bundle(path: str | Path, spec_hash: str | None = None) -> Bundle:
    """Verify and load a bundle.

    spec_hash: the feature spec the caller computes features with (default: the current
    ``features.spec.SPEC_HASH``); a bundle trained on another spec is refused.
    """
    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"{root}: no such model bundle directory")
    verify_manifest(root)
    try:
        config = json.loads((root / CONFIG).read_text())
        metrics = json.loads((root / METRICS).read_text())
        mcfg = ModelConfig.from_dict(config["model"])
        tspec = TargetSpec.from_dict(config["target_spec"])
        names = [str(n) for n in config["feature_names"]]
        bundle_hash = str(config["spec_hash"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{root / CONFIG}: invalid bundle config ({type(exc).__name__}: {exc})") from None
    expected = spec_hash if spec_hash is not None else _current_spec_hash()
    if bundle_hash != expected:
        raise ArtifactError(
            f"{root}: trained for feature spec {bundle_hash}, but features use spec {expected}; "
            "retrain the model (`mlsignals train`) or use the matching feature code"
        )
    scaler, stats = load_preprocessing(root / PREPROCESSING)
    if list(stats.names) != names or mcfg.n_features != len(names):
        raise ArtifactError(f"{root}: feature names in {CONFIG} and {PREPROCESSING} disagree")
    model = UnifiedPatchTST(mcfg)
    try:
        state = load_file(str(root / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:  # e.g. a pickle posing as safetensors
        raise ArtifactError(f"{root / WEIGHTS}: not a readable safetensors file ({exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise ArtifactError(f"{root / WEIGHTS}: weights do not fit the model config ({exc})") from None
    model.eval()
    policy = None
    if (root / POLICY).exists():  # optional, but listed in the manifest when present
        try:
            policy = json.loads((root / POLICY).read_text())
        except ValueError as exc:
            raise ArtifactError(f"{root / POLICY}: unreadable policy ({exc})") from None
    # the bundle's name is its folder (models/<name>/), so a copied bundle is named where it lies;
    # a validated policy or a stack changes the signals, so each is part of the version (and of
    # signal ids)
    stack = OutputStack.load(root, names)
    version = f"{root.name}-{sha256_file(root / WEIGHTS)[:8]}"
    if stack is not None:
        version += f"-s{sha256_file(root / STACK_JSON)[:6]}"
    if policy is not None:
        version += f"-p{sha256_file(root / POLICY)[:6]}"
    return Bundle(
        root,
        root.name,
        model,
        mcfg,
        tspec,
        names,
        bundle_hash,
        scaler,
        stats,
        metrics,
        config,
        version,
        policy,
        stack,
    )


def write_stack(root: Path, stack: OutputStack, extra_files: dict[str, str] | None = None) -> None:
    """Add (or replace) the bundle's stack (and ``extra_files``, e.g. a completed baselines file)
    and re-sign the manifest (verified first). A policy chosen without it no longer describes
    the signals: it is removed."""
    verify_manifest(root)
    for name, text in (extra_files or {}).items():
        (root / name).write_text(text)
    (root / STACK_JSON).write_text(stack.to_json())
    (root / POLICY).unlink(missing_ok=True)
    write_manifest(root)


def write_policy(root: Path, policy: dict[str, Any]) -> None:
    """Add (or replace) the bundle's validated policy and re-sign the manifest. The bundle is
    verified first, so a tampered bundle is never re-signed."""
    verify_manifest(root)
    (root / POLICY).write_text(json.dumps(policy, indent=2) + "\n")
    write_manifest(root)
