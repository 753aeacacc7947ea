"""skybench: a reproducible benchmark and challenge harness for deep learning in astronomy."""

from importlib.metadata import PackageNotFoundError, version

from skybench.cpu import pin_cpu_kernels

pin_cpu_kernels()  # before numpy or torch loads: their code paths are chosen at their first import

try:
    __version__ = version("skybench")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
