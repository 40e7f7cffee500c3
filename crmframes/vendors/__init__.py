"""One module per vendor. Importing this package imports every module in it, and each
declares (and so registers) its connection and its targets: a new vendor is a new module."""

import importlib
import pkgutil

__all__ = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
for _name in __all__:
    importlib.import_module(f"{__name__}.{_name}")
