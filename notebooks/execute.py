"""Execute the tutorial notebooks into notebooks/executed/ (git-ignored), outputs kept, for reading.

    python notebooks/execute.py [NOTEBOOK ...]      # default: every notebooks/*.ipynb, in order

Sizes come from SKYBENCH_NB_SIZE and SKYBENCH_NB_EPOCHS (`make notebooks` sets them); the notebooks share the
scratch project notebooks/.work/ (or $SKYBENCH_NB_WORK), so 03 and 06 show the models of the earlier ones.
"""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent


def main(paths: list[str]) -> int:
    out = HERE / "executed"
    out.mkdir(exist_ok=True)
    failed = 0
    for path in [Path(p).resolve() for p in paths] or sorted(HERE.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        start = time.monotonic()
        try:
            NotebookClient(nb, kernel_name="python3", timeout=1800, resources={"metadata": {"path": str(HERE)}}) \
                .execute()
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - keep the partly executed notebook, go on with the next one
            status, failed = f"FAILED: {type(exc).__name__}: {str(exc).strip().splitlines()[-1][:200]}", failed + 1
        nbformat.write(nb, out / path.name)
        seconds = time.monotonic() - start
        print(f"{path.name}: {seconds:.0f} s, {status} -> {(out / path.name).relative_to(HERE.parent)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
