"""Loaders that turn a converted data set into ``ViewBatch`` es on the training device."""

from pipelines.batch import ViewBatch, ViewMeta

__all__ = ["ViewBatch", "ViewMeta"]
