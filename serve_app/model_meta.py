"""The serving model's meta (version, spec hash, targets, feature stats) cached per caller:
fetched from MLManager once, and again only when an output names another version (hot swap)."""

from __future__ import annotations

from ray.serve.handle import DeploymentHandle

from mlsignals.pipeline import ModelMeta


class ModelMetaCache:
    def __init__(self, ml: DeploymentHandle) -> None:
        self._ml = ml
        self._meta: ModelMeta | None = None

    async def get(self, version: str | None = None) -> ModelMeta:
        if self._meta is None or (version is not None and version != self._meta.model_version):
            self._meta = await self._ml.meta.remote()
        return self._meta
