"""skybench: a reproducible benchmark and challenge harness for deep learning in astronomy."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("skybench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
