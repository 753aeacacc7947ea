"""The contract suite's folder is on sys.path, so its example task imports as ``toy`` (one module name:
registering the same task class under two names would be refused by the registry)."""

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
