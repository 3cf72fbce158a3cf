"""hm3: merge fine-tuned text classifiers with different label spaces into one (HM3)."""

from hm3.errors import Hm3Error

__all__ = ["Hm3Error"]
__version__ = "0.1.0"
