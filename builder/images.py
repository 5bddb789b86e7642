"""The local image store: names (tags) pointing at manifests whose blobs are in the store.

A built image lands here under its `-t` names; `FROM` of such a name uses it without a
network request. Names are kept normalised (docker.io/library/x:latest).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .cache.store import Store
from .errors import UsageError

__all__ = ["ImageStore"]


class ImageStore:
    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def normalize(name: str) -> str:
        from .reference import ImageRef, InvalidReference

        try:
            return str(ImageRef.parse(name))
        except (InvalidReference, ValueError) as exc:
            raise UsageError(f"invalid image name {name!r}: {exc}") from None

    def tag(self, name: str, image: Any) -> None:
        self.store.put_ref(self.normalize(name), {
            "manifest": str(image.manifest_digest),
            "config": str(image.config_digest),
        })

    def tag_many(self, names: Sequence[str], image: Any) -> None:
        normalized = [self.normalize(n) for n in names]  # all valid before any is written
        for name in normalized:
            self.tag(name, image)
