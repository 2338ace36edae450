"""Regenerate the small assets bundled under src/tenfold/assets from the real data, byte for byte.

    python tools/make_assets.py [--data ../shared/data]

Writes
- ``cifar10-mini.zip``: the first 50 images of each class of cifar10-test-even-jpg.zip (numbers
  0000, 0002, ..., 0098), members ``test/<class>/NNNN.jpg`` with the JPEG bytes copied unchanged,
  stored uncompressed with fixed timestamps in sorted order, so the zip is reproducible;
- ``weights/cifar10-resnet20-12fca82f.th`` and ``weights/LICENSE-cifar10-resnets.txt`` (copies).
Prints each file's size and SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "src" / "tenfold" / "assets"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PER_CLASS = 50
WEIGHTS = ("cifar10-resnet20-12fca82f.th", "LICENSE-cifar10-resnets.txt")


def make_cifar10_mini(src: Path, dst: Path, per_class: int = PER_CLASS) -> None:
    """Copy the first ``per_class`` members of each class (by number) into a deterministic zip."""
    with zipfile.ZipFile(src) as zin:
        names = [n for n in zin.namelist() if n.startswith("test/") and n.endswith(".jpg")]
        chosen: list[str] = []
        for c in CLASSES:
            mem = sorted((n for n in names if n.split("/")[1] == c), key=lambda n: int(Path(n).stem))
            if len(mem) < per_class:
                sys.exit(f"{src}: class {c} has only {len(mem)} images")
            chosen += mem[:per_class]
        tmp = dst.with_suffix(".tmp")
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zout:
            for n in chosen:
                info = zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                info.create_system = 3
                zout.writestr(info, zin.read(n))
        tmp.replace(dst)


def main() -> None:
    """Build every asset from ``--data`` (default: tenfold's data_root())."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="real data root (default: $TENFOLD_DATA or ../shared/data)")
    args = ap.parse_args()
    if args.data is None:
        sys.path.insert(0, str(REPO / "src"))
        from tenfold.core.data import data_root

        args.data = data_root()
    data = args.data.resolve()
    (ASSETS / "weights").mkdir(parents=True, exist_ok=True)
    make_cifar10_mini(data / "cifar10" / "cifar10-test-even-jpg.zip", ASSETS / "cifar10-mini.zip")
    for f in WEIGHTS:
        shutil.copyfile(data / "weights" / f, ASSETS / "weights" / f)
    for p in [ASSETS / "cifar10-mini.zip", *(ASSETS / "weights" / f for f in WEIGHTS)]:
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
        print(f"{p.relative_to(REPO)}  {p.stat().st_size:>9,d} bytes  sha256 {digest}")


if __name__ == "__main__":
    main()
