"""Regenerate sheaf's protobuf modules from ``src/sheaf/deploy/_proto/federation.proto``.

Run from the repository root (needs grpcio-tools, pinned in constraints.txt)::

    python scripts/gen_proto.py          # rewrite the generated files
    python scripts/gen_proto.py --check  # exit 1 if they are out of date (CI)

Only the message modules are generated (``federation_pb2.py`` and its ``.pyi`` stub):
sheaf's server and client register the service's methods themselves on raw bytes, so a
request's signature is checked over exactly the bytes that arrived before anything is
parsed. The method paths come from the service descriptor in ``federation_pb2``.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src"
PROTO = Path("sheaf/deploy/_proto/federation.proto")
OUTPUTS = ("federation_pb2.py", "federation_pb2.pyi")


def generate(out: Path) -> None:
    """Run protoc (from grpcio-tools) on the schema, writing into ``out``."""
    from grpc_tools import protoc

    include = Path(protoc.__file__).parent / "_proto"
    args = ["protoc", f"-I{SOURCE}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}", str(PROTO)]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the committed files are current")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        produced = Path(tmp) / PROTO.parent
        stale = (
            [name for name in OUTPUTS if not filecmp.cmp(produced / name, SOURCE / PROTO.parent / name, shallow=False)]
            if all((SOURCE / PROTO.parent / n).exists() for n in OUTPUTS)
            else list(OUTPUTS)
        )
        if args.check:
            if stale:
                sys.exit(f"generated protobuf modules are out of date: {stale}; run python scripts/gen_proto.py")
            print("generated protobuf modules are up to date")
            return
        for name in OUTPUTS:
            shutil.copyfile(produced / name, SOURCE / PROTO.parent / name)
            print(f"wrote {SOURCE / PROTO.parent / name}")


if __name__ == "__main__":
    main()
