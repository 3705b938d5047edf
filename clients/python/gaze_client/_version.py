"""The package's version: the one in clients/python/pyproject.toml, as installed."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gaze-client")
except PackageNotFoundError:   # imported from a source tree that was never installed
    __version__ = "0+unknown"
