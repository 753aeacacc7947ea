"""Model files that are the same bytes whenever the same model is saved: skops, Keras, ONNX and torch.export.

The libraries' own writers are not: skops names its zip members and ``__id__`` fields after ``id(obj)`` (memory
addresses) and stamps every member with the current time; Keras writes ``date_saved`` and ``shared_object_id``
(``id(obj)`` again) into the ``.keras`` zip. Here each file is written by the library, then rewritten with the
addresses renumbered in the order they first appear, a fixed timestamp and the members in the written order, which
loads exactly as the original. Framework imports are lazy: importing this module needs neither torch nor Keras.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip member can carry


def rewrite_zip(path: Path, edit: Mapping[str, Callable[[bytes], bytes]] | None = None,
                rename: Callable[[str], str] | None = None) -> None:
    """Rewrite the zip ``path`` in place: members in their order, contents passed through ``edit[name]``, names
    through ``rename``, every member dated :data:`ZIP_EPOCH` with fixed permissions, compression kept."""
    edit = edit or {}
    with zipfile.ZipFile(path) as zin:
        members = [(info, zin.read(info)) for info in zin.infolist()]
    tmp = path.with_name(path.name + ".tmp-zip")
    with zipfile.ZipFile(tmp, "w") as zout:
        for info, data in members:
            out = zipfile.ZipInfo(rename(info.filename) if rename else info.filename, date_time=ZIP_EPOCH)
            out.compress_type = info.compress_type
            out.external_attr = 0o644 << 16
            out.create_system = 3  # unix, whatever the writer's platform
            zout.writestr(out, edit[info.filename](data) if info.filename in edit else data)
    tmp.replace(path)


def _renumber(pattern: re.Pattern[str]) -> tuple[Callable[[str], str], dict[str, str]]:
    """A ``re.sub`` function replacing each distinct number matched by ``pattern``'s group 1 by 1, 2, 3... in
    order of first appearance, and the mapping it builds."""
    mapping: dict[str, str] = {}

    def sub(text: str) -> str:
        def one(m: re.Match[str]) -> str:
            new = mapping.setdefault(m.group(1), str(len(mapping) + 1))
            return m.group(0)[: m.start(1) - m.start(0)] + new + m.group(0)[m.end(1) - m.start(0):]

        return pattern.sub(one, text)

    return sub, mapping


def save_skops(model: Any, path: str | Path) -> Path:
    """``skops.io.dump(model, path)``, then the object ids renumbered and the timestamps fixed."""
    # not torch (as skybench.harness.runner.import_skops: skops' walk of sklearn's packages imports it otherwise)
    sys.modules.setdefault("sklearn.externals.array_api_compat.torch", None)  # type: ignore[arg-type]
    import skops.io as sio

    path = Path(path)
    sio.dump(model, path)
    with zipfile.ZipFile(path) as z:
        schema = z.read("schema.json").decode()
    # "__id__": <id> and "file": "<id>.npy" (also .npz and other per-object files) name the same objects
    sub, mapping = _renumber(re.compile(r'"(?:__id__|file)": "?(\d+)'))
    schema = sub(schema)

    def rename(name: str) -> str:
        stem, dot, ext = name.partition(".")
        return f"{mapping[stem]}{dot}{ext}" if stem in mapping else name

    rewrite_zip(path, {"schema.json": lambda _: schema.encode()}, rename)
    return path


def save_keras(model: Any, path: str | Path) -> Path:
    """``model.save(path)`` (``.keras``), then ``shared_object_id`` renumbered and ``date_saved`` fixed."""
    path = Path(path)
    model.save(path)
    sub, _ = _renumber(re.compile(r'"shared_object_id": (\d+)'))

    def metadata(data: bytes) -> bytes:
        meta = json.loads(data)
        meta["date_saved"] = "1980-01-01@00:00:00"
        return json.dumps(meta).encode()

    rewrite_zip(path, {"config.json": lambda d: sub(d.decode()).encode(), "metadata.json": metadata})
    return path


def export_onnx(model: Any, path: str | Path, shape: tuple[int, ...], output: str) -> Path:
    """The torch module ``model`` (on the CPU, eval mode) as ONNX with a dynamic batch axis: input ``images``
    (N, *shape), output ``output`` (TorchScript exporter: names follow the module tree, no timestamps)."""
    import torch

    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.cpu().eval(), (torch.zeros(2, *shape),), str(path), input_names=["images"],
                          output_names=[output], dynamic_axes={"images": {0: "N"}, output: {0: "N"}},
                          dynamo=False)
    return path


def save_torch_export(program: Any, path: str | Path, root: str | Path) -> Path:
    """``torch.export.save(program, path)`` (``.pt2``), then the same bytes in any checkout: torch writes a random
    serialization id and the absolute paths of the source files (the nodes' stack traces); the paths under ``root``
    (the checkout) are made relative, and the id becomes a digest of the content so edited."""
    import torch

    path = Path(path)
    torch.export.save(program, str(path))
    prefix = f"{Path(root).resolve()}/".encode()
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        digest = hashlib.sha256(b"".join(z.read(n).replace(prefix, b"") if n.endswith(".json") else z.read(n)
                                         for n in names if not n.endswith("serialization_id")))
    edits: dict[str, Callable[[bytes], bytes]] = {n: (lambda d: d.replace(prefix, b"")) for n in names
                                                  if n.endswith(".json")}
    edits.update({n: (lambda _: str(int(digest.hexdigest()[:32], 16)).encode())
                  for n in names if n.endswith("serialization_id")})
    rewrite_zip(path, edits)
    return path
