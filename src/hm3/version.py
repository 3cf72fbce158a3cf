"""hm3's version: the installed distribution's, else the version this source tree declares.

Modules that record the version (model cards, metadata) import it from here, never from the
package root ``hm3``, which imports the whole public API lazily from above every layer.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("hm3")
except PackageNotFoundError:  # a source tree on sys.path that was never installed
    __version__ = "0.1.0"
