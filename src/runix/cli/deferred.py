"""Deferred imports for the `runix deploy` fast path: modules that the standard library's http.client and tarfile
import but a deploy to an http:// API never uses are made on first use instead of at start-up.

A deferred module is in sys.modules at once, with its name, spec and path, so `import x` elsewhere finds it; its code
runs the first time any other attribute is read (so `from x import y` loads it at once, as it must). Only modules
whose importers merely bind the name qualify. Together they are ~3 ms of the ~30 ms from a deploy's start to its
first request (measured against a closed port, as bench/cli_deploy.py does); Python's own LazyLoader does not do
here, since on 3.11 a second `import x` runs it. Installed only by `runix deploy` (runix.cli.run), never in the server.
"""

from __future__ import annotations

import _thread
import sys
import types
from importlib.machinery import ModuleSpec, SourceFileLoader
from typing import Any

# Each is imported on the deploy path by a plain `import x` and used only inside functions we do not call.
DEFERRED = frozenset({
    "ssl",  # http.client: TLS, for https:// only
    "email.header", "email.quoprimime", "email.base64mime",  # email (under http.client): encoding headers and bodies
    "ipaddress",  # urllib.parse: checking bracketed IPv6 hosts ([::1])
    "locale",  # calendar (under email.utils): localised month names
    "shutil",  # tarfile: not used to pack (it loads bz2 and lzma only to see if they exist)
    "selectors",  # socket: sendfile
})
# Not deferrable, though only their importers' unused parts need them: email.parser (http.client reads every answer's
# headers with it), copy (tarfile copies each member's header), email.encoders and quopri (from-imported by
# email.charset), datetime (calendar's module body).

_lock = _thread.RLock()
_running: set[str] = set()


class _Deferred(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        """Runs the module's code (once, whichever thread asks first), then answers from it."""
        spec = self.__spec__
        with _lock:
            if type(self) is _Deferred and spec.name not in _running:
                loader = spec.loader.loader  # type: ignore[union-attr]
                spec.loader = self.__loader__ = loader
                _running.add(spec.name)
                try:
                    loader.exec_module(self)
                except BaseException:
                    sys.modules.pop(spec.name, None)
                    raise
                finally:
                    _running.discard(spec.name)
                self.__class__ = types.ModuleType
            elif name not in self.__dict__:  # read while its own code runs: not there yet, as in any import
                raise AttributeError(f"partially initialised module {spec.name!r} has no attribute {name!r}")
        return getattr(self, name)


class _DeferringLoader:
    def __init__(self, loader: SourceFileLoader):
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        module.__class__ = _Deferred


class _Finder:
    """Finds each deferred module the usual way (the other finders), and defers running it."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if name not in DEFERRED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if isinstance(spec.loader, SourceFileLoader):  # Python code only: C modules initialise when made
                    spec.loader = _DeferringLoader(spec.loader)  # type: ignore[assignment]
                return spec
        return None


def install() -> None:
    """Defers the DEFERRED modules not imported yet, for the rest of this process."""
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
