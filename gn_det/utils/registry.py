"""Name -> object registries (fvcore's storage) with string names and errors that list the choices."""
from __future__ import annotations

import difflib
from typing import Any, Callable, Optional

from fvcore.common.registry import Registry as _FvcoreRegistry


class UnknownNameError(KeyError):
    """A registry lookup of a name nobody registered; prints its message without KeyError's quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class Registry(_FvcoreRegistry):
    """An fvcore Registry that also registers under an explicit string name and explains misses.

    ``@REG.register("Name")`` registers under "Name"; ``@REG.register()`` and ``REG.register(obj)``
    use ``obj.__name__`` as in fvcore. A duplicate name raises ValueError (fvcore asserts, which
    vanishes under ``python -O``). ``get`` of an unknown name raises UnknownNameError (a KeyError) quoting the name as
    typed, the config key it came from (if given) and the sorted registered names.
    """

    def _do_register(self, name: str, obj: Any) -> None:
        if name in self._obj_map:
            raise ValueError(f"An object named {name!r} was already registered in the {self._name} registry")
        self._obj_map[name] = obj

    def register(self, obj: Any = None) -> Any:  # type: ignore[override]
        """Register ``obj`` (or decorate), under ``obj.__name__`` or the string given instead of obj."""
        if obj is None or isinstance(obj, str):
            explicit_name: Optional[str] = obj

            def deco(func_or_class: Callable) -> Callable:
                self._do_register(func_or_class.__name__ if explicit_name is None else explicit_name, func_or_class)
                return func_or_class

            return deco
        self._do_register(obj.__name__, obj)
        return obj

    def unregister(self, name: str) -> Any:
        """Remove and return the object registered as ``name`` (tests and interactive sessions)."""
        if name not in self._obj_map:
            raise UnknownNameError(f"{name!r} is not registered in the {self._name} registry")
        return self._obj_map.pop(name)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._obj_map)

    def get(self, name: str, key: str = "") -> Any:  # type: ignore[override]
        """Return the object registered as ``name``; ``key`` names the config key for the error."""
        if name in self._obj_map:
            return self._obj_map[name]
        where = f" (from {key})" if key else ""
        same_letters = [n for n in self.names() if n.lower() == str(name).lower()]  # 'Ws' -> 'WS'
        close = same_letters or difflib.get_close_matches(str(name), self.names(), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownNameError(
            f"Unknown {self._name} name {name!r}{where}. Registered names: "
            f"{', '.join(n if n else repr(n) for n in self.names())}.{hint}"
        )
