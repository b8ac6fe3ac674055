"""Every file faaq writes goes through here: whole or absent, readable per the user's umask.

A temporary file is written next to the target and renamed over it, so a crash or an
error never leaves half a file. mkstemp creates 0600 files; outputs get the mode an
ordinary `open()` would give (0666 minus the umask), so a serving process running as
another user can read the model.

Models with external data have two files that cannot be renamed together. The data
file is named after a hash of its content (`model.onnx.<hash>.data`) and renamed into
place first; renaming the .onnx over its target is then the single commit point:
readers see the old pair or the new pair, never a mix. The old data file is removed
after the commit.

A command with several outputs (a model, its plan, its report) checks every destination
before any work (`check_destinations`), then stages them all in an `OutputSet`: each is
written to a temporary file beside its target, and only once every one is written are
they renamed into place. A write that fails removes every temporary file and every folder
the set made, and leaves each target as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from faaq_onnx.errors import FaaqError

EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # protobuf refuses messages over 2 GB


def _mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a temporary path beside `path`; on success it replaces `path` (mode per umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())


def write_json_atomic(path, payload) -> Path:
    return write_text_atomic(path, json.dumps(payload, indent=2, default=_jsonable) + "\n")


def savefig_atomic(fig, path, **kwargs) -> Path:
    with atomic_path(path, suffix=Path(path).suffix) as tmp:
        fig.savefig(tmp, **kwargs)
    return Path(path)


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def tensor_bytes(model) -> int:
    """Bytes of initializer data in an onnx.ModelProto or an onnx_ir.Model (external included)."""
    if isinstance(model, onnx.ModelProto):
        return sum(len(t.raw_data) or _approx_bytes(t) for t in model.graph.initializer)
    return sum(
        v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None
    )


def _approx_bytes(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= d
    return n * 4


def save_model_atomic(model, path, external_data: bool | None = None) -> Path:
    """Write an onnx.ModelProto or onnx_ir.Model; never modifies the object given.

    `external_data=None` decides by size (over ~1.8 GB of tensors: external data).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = _stage_model(model, path, external_data)
    try:
        staged.commit()
    except BaseException:
        staged.discard()
        raise
    return path


@dataclass
class _Staged:
    """One output written beside its target, not yet in place."""

    target: Path
    tmp: Path
    renames: list[tuple[Path, Path]] = field(
        default_factory=list
    )  # before the commit point (data files)
    obsolete: list[Path] = field(default_factory=list)  # removed after the commit point

    def commit(self) -> None:
        for src, dst in self.renames:
            os.replace(src, dst)
        os.replace(self.tmp, self.target)  # the commit point
        for old in self.obsolete:
            old.unlink(missing_ok=True)

    def discard(self) -> None:
        self.tmp.unlink(missing_ok=True)
        for src, _ in self.renames:
            src.unlink(missing_ok=True)


def _temp_beside(path: Path, suffix: str = ".tmp") -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _stage_model(model, path: Path, external_data: bool | None) -> _Staged:
    """The model (and its data file, when external) written beside `path`, ready to rename."""
    import onnx_ir as ir

    big = tensor_bytes(model) > EXTERNAL_DATA_THRESHOLD if external_data is None else external_data
    if external_data is None and isinstance(model, onnx.ModelProto) and _has_external(model):
        big = (
            True  # weights still in the input's data files: the output gets a data file of its own
        )
    old_refs = _referenced_data(path)
    if not big:
        proto = model if isinstance(model, onnx.ModelProto) else _to_proto(model)
        tmp = _temp_beside(path)
        try:
            onnx.save_model(proto, str(tmp))
            os.chmod(tmp, _mode())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return _Staged(path, tmp, obsolete=[path.parent / n for n in sorted(old_refs)])
    ir_model = ir.from_proto(model) if isinstance(model, onnx.ModelProto) else model
    token = next(tempfile._get_candidate_names())  # type: ignore[attr-defined]  # a unique name, nothing more
    tmp_data = path.parent / f".{path.name}.{token}.data.tmp"
    tmp_model = path.parent / f".{path.name}.{token}.tmp"
    try:
        ir.save(ir_model, tmp_model, external_data=tmp_data.name)
        digest = _file_digest(tmp_data)
        data_name = f"{path.name}.{digest[:12]}.data"
        os.chmod(tmp_data, _mode())
        header = onnx.load(str(tmp_model), load_external_data=False)
        for t in _all_tensors(header):
            for entry in t.external_data:
                if entry.key == "location" and entry.value == tmp_data.name:
                    entry.value = data_name
        onnx.save_model(header, str(tmp_model))
        os.chmod(tmp_model, _mode())
    except BaseException:
        tmp_model.unlink(missing_ok=True)
        tmp_data.unlink(missing_ok=True)
        raise
    return _Staged(
        path,
        tmp_model,
        renames=[(tmp_data, path.parent / data_name)],
        obsolete=[path.parent / n for n in sorted(old_refs - {data_name})],
    )


def check_destinations(
    outputs, inputs: dict[str, Any] | None = None, folders: tuple[str, ...] = ()
) -> None:
    """Refuse, in one line and before any work, a destination that cannot be written.

    `outputs` maps each option (``-o``, ``--json``) to its path (None or '-': nothing to
    check), as a dict or as (option, path) pairs; options in `folders` name a folder. Each destination must be a file (or folder)
    where one can be made: a missing parent is fine (made at the commit), a parent that is
    a file or not writable is not. Two options may not name the same file, and no output
    may be one of the `inputs` (label -> path), which are never overwritten. Nothing is
    created (a probe file in the nearest existing folder is removed at once).
    """
    seen: dict[Path, str] = {}
    for option, path in outputs.items() if isinstance(outputs, dict) else outputs:
        if path is None or str(path) == "-":
            continue
        check_writable(path, option, folder=option in folders)
        key = Path(path).resolve()
        if key in seen:
            raise FaaqError(
                f"{option} and {seen[key]} name the same file {path}: give each output its own path"
            )
        seen[key] = option
    for label, path in (inputs or {}).items():
        if path is None:
            continue
        for p in path if isinstance(path, (list, tuple)) else [path]:
            key = Path(p).resolve()
            if key in seen:
                raise FaaqError(
                    f"{seen[key]} {p} is the input {label}: choose another path, "
                    "inputs are never overwritten"
                )


def check_writable(path, option: str, folder: bool = False) -> None:
    """One line naming `option` unless a file (or folder) can be written at `path`."""
    p = Path(path)
    what = f"cannot write {option} {path}"
    if p.is_dir() and not folder:
        raise FaaqError(f"{what}: it is a folder, not a file")
    if p.exists() and folder and not p.is_dir():
        raise FaaqError(f"{what}: it is a file, not a folder")
    base = p if folder else p.parent
    probe = base
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise FaaqError(f"{what}: {probe} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".faaq-check-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise FaaqError(f"{what}: cannot create files in {probe} ({exc.strerror})") from None


class OutputSet:
    """Several outputs committed together (see the module doc).

    ::

        with OutputSet() as outs:
            outs.add_model(path, proto, "-o")
            outs.add_json(plan_path, plan.to_dict(), "--save-plan")
            outs.add_file(png_path, "--report", lambda tmp: plot(curve, tmp))
        # all renamed into place here; on an exception none is, and nothing is left

    An OSError while writing becomes a one-line FaaqError naming the option and the path.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[str, _Staged]] = []
        self._made: list[Path] = []  # folders this set created, outermost first

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def _parent(self, path: Path, option: str) -> None:
        missing = []
        d = path.parent
        while not d.exists() and d != d.parent:
            missing.append(d)
            d = d.parent
        for m in reversed(missing):
            try:
                m.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise self._error(option, path, exc) from None
            self._made.append(m)

    @staticmethod
    def _error(option: str, path, exc: OSError) -> FaaqError:
        return FaaqError(f"cannot write {option} {path}: {exc.strerror or exc}")

    def _stage(self, path, option: str, make: Callable[[Path], _Staged]) -> _Staged:
        path = Path(path)
        try:
            self._parent(path, option)
            staged = make(path)
        except FaaqError:
            self.discard()
            raise
        except OSError as exc:
            self.discard()
            raise self._error(option, path, exc) from None
        except BaseException:
            self.discard()
            raise
        self._staged.append((option, staged))
        return staged

    def add_file(self, path, option: str, fill: Callable[[Path], object]) -> Path:
        """Stage a file `fill(tmp)` writes (tmp keeps the target's suffix, for writers that go by it)."""

        def make(target: Path) -> _Staged:
            tmp = _temp_beside(target, target.suffix or ".tmp")
            try:
                fill(tmp)
                os.chmod(tmp, _mode())
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            return _Staged(target, tmp)

        return self._stage(path, option, make).tmp

    def add_bytes(self, path, data: bytes, option: str) -> None:
        self.add_file(path, option, lambda tmp: tmp.write_bytes(data))

    def add_text(self, path, text: str, option: str) -> None:
        self.add_bytes(path, text.encode(), option)

    def add_json(self, path, payload, option: str) -> None:
        self.add_text(path, json.dumps(payload, indent=2, default=_jsonable) + "\n", option)

    def add_model(self, path, model, option: str, external_data: bool | None = None) -> int:
        """Stage a model (with its data file when external); returns the size of the .onnx file."""
        staged = self._stage(
            path, option, lambda target: _stage_model(model, target, external_data)
        )
        return staged.tmp.stat().st_size

    def commit(self) -> None:
        """Rename every staged output into place, in the order staged."""
        staged, self._staged = self._staged, []
        for i, (option, s) in enumerate(staged):
            try:
                s.commit()
            except OSError as exc:
                for _, rest in staged[i:]:
                    rest.discard()
                raise self._error(option, s.target, exc) from None
        self._made = []

    def discard(self) -> None:
        """Remove every temporary file and every folder this set made; targets stay as they were."""
        for _, s in self._staged:
            s.discard()
        self._staged = []
        for d in reversed(self._made):
            with contextlib.suppress(OSError):
                d.rmdir()
        self._made = []


def _has_external(proto: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def _to_proto(model):
    from faaq_onnx.graph import to_proto

    return to_proto(model)


def _file_digest(p: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _all_tensors(proto: onnx.ModelProto):
    yield from proto.graph.initializer
    for node in proto.graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                yield a.t


def _referenced_data(path: Path) -> set[str]:
    """External data files the model now at `path` points to (ours only: '<name>.<hash>.data')."""
    if not path.is_file():
        return set()
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not a model we wrote: leave its neighbours alone
        return set()
    return {
        e.value
        for t in _all_tensors(proto)
        for e in t.external_data
        if e.key == "location" and e.value.startswith(path.name + ".") and e.value.endswith(".data")
    }


def _remove_old_data(path: Path, keep: str | None, before: set[str]) -> None:
    for name in before - ({keep} if keep else set()):
        (path.parent / name).unlink(missing_ok=True)
