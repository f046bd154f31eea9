"""Each paper's evaluation metrics, computed as their reference code computes them.

Every submodule declares ``__all__``; this package re-exports all of them, so
``fourfold.metrics.vlhi`` and ``fourfold.metrics.kld`` work without knowing the file each lives in.
"""

import importlib as _importlib
import pkgutil as _pkgutil
import types as _types

__all__: list[str] = []

for _info in sorted(_pkgutil.iter_modules(__path__), key=lambda i: i.name):
    if _info.name.startswith("_"):
        continue
    _module = _importlib.import_module(f"{__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", ()):
        # a function may share its submodule's name (metrics/vlhi.py defines vlhi): the function wins
        _existing = globals().get(_name)
        if (
            _existing is not None
            and not isinstance(_existing, _types.ModuleType)
            and _existing is not getattr(_module, _name)
        ):
            raise ImportError(f"fourfold.metrics: name {_name!r} is exported by two submodules")
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
