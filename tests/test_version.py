"""``hm3.version``: the one place the version lives; the package root re-exports it."""

from __future__ import annotations

from importlib.metadata import version

import hm3
from hm3.version import __version__


def test_the_version_is_the_installed_distributions_and_the_roots():
    assert __version__ == version("hm3")
    assert hm3.__version__ == __version__ and "__version__" in hm3.__all__
