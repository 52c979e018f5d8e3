"""Dataset and metadata catalogs (detectron2's DatasetCatalog / MetadataCatalog).

A dataset is registered under a name with a function that returns its list of dataset dicts; the
function runs only when the dataset is asked for, so registering COCO costs nothing until used.
Metadata (class names, id mapping, json file, image root, evaluator type) lives beside it.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata"]


class _DatasetCatalog:
    """Name -> function returning a list of dataset dicts (detectron2's standard format)."""

    def __init__(self) -> None:
        self._funcs: Dict[str, Callable[[], List[dict]]] = {}

    def register(self, name: str, func: Callable[[], List[dict]]) -> None:
        """Register `func` (no arguments, returns list[dict]) under `name`; a name is registered once."""
        if not callable(func):
            raise TypeError(f"DatasetCatalog.register('{name}', func): func must be callable, got {type(func)}")
        if name in self._funcs:
            raise KeyError(f"Dataset '{name}' is already registered; DatasetCatalog.remove('{name}') first "
                           f"to register it again")
        self._funcs[name] = func

    def get(self, name: str) -> List[dict]:
        """Call the registered function of `name` and return its dataset dicts."""
        try:
            func = self._funcs[name]
        except KeyError:
            raise KeyError(
                f"Dataset '{name}' is not registered. Registered: {sorted(self._funcs)}. Register it with "
                f"register_coco_instances(name, {{}}, json_file, image_root), --register-coco NAME JSON ROOT "
                f"or DATASETS.REGISTER_COCO") from None
        return func()

    def list(self) -> List[str]:
        """Registered names, sorted."""
        return sorted(self._funcs)

    def remove(self, name: str) -> None:
        """Forget `name` (no error if it is not registered)."""
        self._funcs.pop(name, None)

    def __contains__(self, name: str) -> bool:
        return name in self._funcs


class Metadata:
    """Attributes of one dataset. Setting an attribute to a value different from the one it
    already holds is an error (two sources disagreeing about a dataset's classes is a bug)."""

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        raise AttributeError(f"Metadata of dataset '{self.name}' has no attribute '{key}'; "
                             f"it has {sorted(self.as_dict())}")

    def __setattr__(self, key: str, value: Any) -> None:
        if key in self.__dict__ and self.__dict__[key] != value:
            raise ValueError(f"Metadata '{key}' of dataset '{self.name}' is already {self.__dict__[key]!r}; "
                             f"refusing to change it to {value!r}")
        object.__setattr__(self, key, value)

    def set(self, **kwargs: Any) -> "Metadata":
        """Set several attributes; returns self."""
        for key, value in kwargs.items():
            setattr(self, key, value)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        """The attribute `key`, or `default` when it is not set."""
        return self.__dict__.get(key, default)

    def as_dict(self) -> Dict[str, Any]:
        """A copy of all attributes."""
        return copy.copy(self.__dict__)

    def __repr__(self) -> str:
        return f"Metadata({self.__dict__!r})"


class _MetadataCatalog:
    """Name -> Metadata, created empty on first access."""

    def __init__(self) -> None:
        self._metas: Dict[str, Metadata] = {}

    def get(self, name: str) -> Metadata:
        """The Metadata of `name` (created empty if new)."""
        if name not in self._metas:
            self._metas[name] = Metadata(name)
        return self._metas[name]

    def list(self) -> List[str]:
        """Names with metadata, sorted."""
        return sorted(self._metas)

    def remove(self, name: str) -> None:
        """Forget the metadata of `name`."""
        self._metas.pop(name, None)


DatasetCatalog = _DatasetCatalog()
MetadataCatalog = _MetadataCatalog()
