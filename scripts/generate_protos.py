"""Generate the Python stubs of protos/ into the loyalnet package, or check they are fresh.

    .venv/bin/python scripts/generate_protos.py          # (re)write the stubs
    .venv/bin/python scripts/generate_protos.py --check  # exit 1 when they are stale

``protos/loyalnet/chain/v1/chain.proto`` becomes ``loyalnet/chain/v1/chain_pb2.py`` (messages),
``chain_pb2_grpc.py`` (services) and their ``.pyi`` type stubs (mypy-protobuf), all generated
by grpcio-tools' bundled protoc: nobody edits them by hand. tox runs the check.
``protos/loyalnet/store/v1/store.proto`` (the store's local API) and ``trainer.proto`` (the
trainer of ``store serve``, for the store's ClientApp) become ``loyalnet/store/v1/store_pb2*.py``
and ``trainer_pb2*.py`` the same way.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
BIN = Path(sys.executable).parent
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def generate(out: Path) -> list[Path]:
    """Write the stubs of every .proto under protos/ into ``out``; return the files written."""
    sources = sorted(PROTOS.rglob("*.proto"))
    include = str(files("grpc_tools") / "_proto")  # google/protobuf/*.proto
    arguments = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        # mypy-protobuf's plugins sit beside this interpreter, which need not be on PATH.
        f"--plugin=protoc-gen-mypy={BIN / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={BIN / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--mypy_out={out}",
        f"--mypy_grpc_out={out}",
        *(str(source) for source in sources),
    ]
    if protoc.main(arguments) != 0:
        raise SystemExit("protoc failed; see the message above.")
    return [
        out / source.relative_to(PROTOS).with_name(source.stem + suffix)
        for source in sources
        for suffix in SUFFIXES
    ]


def main(argv: list[str]) -> int:
    if argv not in ([], ["--check"]):
        print(__doc__)
        return 2
    if not argv:
        for path in generate(ROOT):
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        fresh = generate(Path(scratch))
        stale = [
            path.relative_to(scratch)
            for path in fresh
            if not (ROOT / path.relative_to(scratch)).is_file()
            or not filecmp.cmp(path, ROOT / path.relative_to(scratch), shallow=False)
        ]
    if stale:
        names = ", ".join(str(path) for path in stale)
        print(f"stale protobuf stubs: {names}; run `.venv/bin/python scripts/generate_protos.py`.")
        return 1
    print("protobuf stubs are fresh")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
