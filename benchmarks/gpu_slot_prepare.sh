#!/usr/bin/env bash
# Builds what benchmarks/gpu_slot.sh needs on a GPU machine that has no network and only what the device tool
# carries (64 MiB with the working tree), here, from the repo root:
#   .gpudata/   TENFOLD_DATA for the slot: cifar10/ (the test zip, and the train zip cut to the first 1,000 images
#               of each class: 10 MB instead of 50; a class-balanced prefix of up to 10,000, as the benchmarks'
#               calibration sets, is the same images), weights/ (ResNet-20 and -56 with their licence), mnist/ and
#               omniglot/ (3 MB), and cache/: TENFOLD_CACHE for the slot, the LSGM FD-CNNs this machine has cached
#               (~/.cache/tenfold/lsgm; the studies train them on first use, a minute each on a CPU)
#   .gpuwheels/ wheels the GPU image lacks (tyro, kornia, breaching and what they need; Python 3.12, x86-64)
# Both are listed in .git/info/exclude. Then: device run with carry [".gpudata", ".gpuwheels"] and the command
#   set -o pipefail; bash benchmarks/gpu_slot.sh 2>&1 | tee $OUT/slot.log
#   bash benchmarks/gpu_slot_prepare.sh [SHARED_DATA]    # default ../shared/data
set -eu
SRC=${1:-../shared/data}
grep -qx "/.gpudata/" .git/info/exclude 2>/dev/null || echo "/.gpudata/" >> .git/info/exclude
grep -qx "/.gpuwheels/" .git/info/exclude 2>/dev/null || echo "/.gpuwheels/" >> .git/info/exclude
rm -rf .gpudata .gpuwheels
mkdir -p .gpudata/cifar10 .gpudata/weights .gpuwheels
cp "$SRC/cifar10/cifar10-test-even-jpg.zip" .gpudata/cifar10/
cp -r "$SRC/mnist" "$SRC/omniglot" .gpudata/
if [ -d "$HOME/.cache/tenfold/lsgm" ]; then mkdir -p .gpudata/cache && cp -r "$HOME/.cache/tenfold/lsgm" .gpudata/cache/; fi
cp "$SRC"/weights/cifar10-resnet20-*.th "$SRC"/weights/cifar10-resnet56-*.th "$SRC/weights/LICENSE-cifar10-resnets.txt" \
  .gpudata/weights/
python3 - "$SRC/cifar10/cifar10-train-jpg.zip" .gpudata/cifar10/cifar10-train-jpg.zip <<'EOF'
import re, sys, zipfile
src, dst = zipfile.ZipFile(sys.argv[1]), zipfile.ZipFile(sys.argv[2], "w", zipfile.ZIP_STORED)
by_class: dict[str, list[str]] = {}
for m in src.namelist():
    parts = m.split("/")
    if len(parts) == 3 and parts[2].endswith(".jpg"):
        by_class.setdefault(parts[1], []).append(m)
for members in by_class.values():  # the loader's order: numeric file stems within each class
    members.sort(key=lambda s: int(re.sub(r"\D", "", s.rsplit("/", 1)[1]) or 0))
    for m in members[:1000]:
        dst.writestr(m, src.read(m))
dst.close()
EOF
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" \
  -d .gpuwheels tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1 kornia==0.9.0 kornia-rs==0.2.0
python3 -m pip wheel -q --no-deps -w .gpuwheels breaching==0.1.2 hydra-core==1.3.8 omegaconf==2.3.0 \
  antlr4-python3-runtime==4.9.3
du -sh .gpudata .gpuwheels
