#!/usr/bin/env bash
# One prepared GPU slot (about 9 minutes on one H100): what a session lent a GPU for ~15 minutes runs, in one go.
#   1. LSGM `cifar10` preset: a short run of both stages under torchrun (bf16), then `sample` and `evaluate`;
#      `paper-cifar10`: seconds per step of both stages; benchmarks/lsgm_gpu_cost.py extrapolates to the full
#      schedules (-> $OUT/lsgm_gpu.json).
#   2. GradInversion: `attack --set device=cuda` through the CLI, then benchmarks/gradinversion.py at B = 8 and
#      1,500 iterations, the preset's budget (the CPU runs stop at 1,000) (-> $OUT/gradinversion_gpu.json
#      and one image grid).
# Every part has its own time limit and a failure does not stop the next part. Data: $TENFOLD_DATA (default
# .gpudata: cifar10/ with the test zip and the train zip's first 1,000 images of each class, and weights/);
# Python packages the GPU image lacks: wheels in .gpuwheels (tyro, kornia, breaching and their needs). Both are
# built by benchmarks/gpu_slot_prepare.sh.
#   bash benchmarks/gpu_slot.sh          # on the GPU machine, from the repo root, OUT set
#   DRY=1 bash benchmarks/gpu_slot.sh    # the same steps at toy sizes on the CPU: checks the script itself
# What it writes under $OUT ends up in $OUT/slot.tgz (its listing in slot_files.txt): the device tool returns
# at most 8 files.
#   PARTS="gi c10" runs those parts in that order (default: c10 paper gi; gi_cells: the six GradInversion cells as
#   parallel processes, ours vs invertinggradients at GI_CELL_IT iterations, merged into one JSON; lsgm_budget: the
#   LSGM NFE study of benchmarks/lsgm_time_scale.py on MNIST and OMNIGLOT at the CPU benchmark's 3,200 steps and at
#   LSGM_BUDGET_LONG steps, each model its own process, joined per dataset and budget by --merge)
set -u
OUT=${OUT:-/tmp/gpu_slot_out}
RUNS=${RUNS:-/tmp/gpu_slot_runs}
mkdir -p "$OUT" "$RUNS"
if [ -d .gpuwheels ] && ls .gpuwheels/*.whl >/dev/null 2>&1 && [ "${DRY:-0}" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .gpuwheels/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1 PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} TENFOLD_DATA=${TENFOLD_DATA:-.gpudata}
[ -d .gpudata/cache ] && export TENFOLD_CACHE=${TENFOLD_CACHE:-.gpudata/cache}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4} TQDM_DISABLE=1
if [ "${DRY:-0}" = 1 ]; then
  DEV=cpu S_C10=4 S_PAPER=2 LOG=2 N_SAMPLE=8 EV_LIMIT=8 FD=8 GI_IT=4 GI_ATK_IT=4 GI_B="1"
  EXTRA_C10=(--set device=cpu --set amp=none --set batch_size=8 --set eval_batch=8 --set vae_ch=16 --set score_ch=32)
  EXTRA_PAPER=(--set device=cpu --set amp=none --set batch_size=2 --set vae_ch=16 --set score_ch=32 --set score_blocks=1)
  GI_EXTRA=(--timing-iterations 2 --timing-pairs 1) GI_CELL_IT=4 GI_CELL_B="1 4" GI_CELL_LIMIT=120
  BUDGETS="40 80" BUDGET_LIMIT=${LSGM_BUDGET_LIMIT:-300}
else
  DEV=cuda S_C10=500 S_PAPER=30 LOG=50 N_SAMPLE=256 EV_LIMIT=512 FD=256 GI_IT=${GI_IT:-1500} GI_ATK_IT=300 GI_B="8"
  EXTRA_C10=() EXTRA_PAPER=() GI_EXTRA=(--timing-pairs 1)
  GI_CELL_IT=${GI_CELL_IT:-2500} GI_CELL_B=${GI_CELL_B:-"1 4 8"} GI_CELL_LIMIT=${GI_CELL_LIMIT:-360}
  BUDGETS="3200 ${LSGM_BUDGET_LONG:-12800}" BUDGET_LIMIT=${LSGM_BUDGET_LIMIT:-480}
fi
say() { echo "== $(date +%T) $*"; }
TORCHRUN=(python3 -m torch.distributed.run --standalone --nproc-per-node 1 -m tenfold)

say environment
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"
python3 -c "import torch, torchvision, timm, tyro, kornia, torchdiffeq; print('torch', torch.__version__, 'cuda',
torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')"

C10="$RUNS/lsgm_cifar10"
PAPER="$RUNS/lsgm_paper"

part_c10() {
  say "lsgm cifar10: short run of both stages ($S_C10 + $S_C10 steps)"
  timeout 120 "${TORCHRUN[@]}" lsgm train --preset cifar10 --set stage1_steps=$S_C10 \
    --set stage2_steps=$S_C10 --set log_every=$LOG --set ckpt_every=$S_C10 "${EXTRA_C10[@]}" --out "$C10" --json \
    > "$RUNS/c10_train.json" || say "lsgm cifar10 train: exit $?"
  tail -c 2000 "$RUNS/c10_train.json"; echo
  say "lsgm cifar10: sample $N_SAMPLE"
  timeout 40 python3 -m tenfold lsgm sample --checkpoint "$C10" --num-samples $N_SAMPLE --device $DEV \
    --out "$RUNS/c10_sample" --json > "$RUNS/c10_sample.json" || say "lsgm sample: exit $?"
  cat "$RUNS/c10_sample.json"; echo
  cp "$RUNS/c10_sample/samples.png" "$OUT/lsgm_cifar10_samples.png" 2>/dev/null
  say "lsgm cifar10: evaluate on $EV_LIMIT cifar10-test images, $FD FD samples"
  timeout 90 python3 -m tenfold lsgm evaluate --checkpoint "$C10" --data cifar10-test --limit $EV_LIMIT \
    --fd-samples $FD --device $DEV --out "$RUNS/c10_eval" --json > "$RUNS/c10_eval.json" \
    || say "lsgm evaluate: exit $?"
  cat "$RUNS/c10_eval.json"; echo
}

part_paper() {
  # batch_size is global (the engine splits it over ranks): the preset's 256 is 32 per rank on the paper's 8 GPUs;
  # 256 on one 80 GB H100 ran out of memory in stage 2, so one rank's share is timed here
  say "lsgm paper-cifar10: seconds per step ($S_PAPER + $S_PAPER steps, batch 32 = one of 8 ranks)"
  timeout ${PAPER_LIMIT:-90} "${TORCHRUN[@]}" lsgm train --preset paper-cifar10 --set stage1_steps=$S_PAPER \
    --set stage2_steps=$S_PAPER --set log_every=$((S_PAPER / 3 > 0 ? S_PAPER / 3 : 1)) --set ckpt_every=0 \
    --set batch_size=32 "${EXTRA_PAPER[@]}" --out "$PAPER" --json > "$RUNS/paper_train.json" \
    || say "paper-cifar10: exit $?"
}

part_gi() {
  say "gradinversion attack through the CLI on $DEV"
  timeout 40 python3 -m tenfold gradinversion attack --preset cpu --model cifar10-resnet20 \
    --data cifar10-test --batch-size 8 --iterations $GI_ATK_IT --set device=$DEV --out "$RUNS/gi_attack" --json \
    > "$OUT/gi_attack.json" || say "gradinversion attack: exit $?"
  cat "$OUT/gi_attack.json"; echo
  cp "$RUNS/gi_attack/grid.png" "$OUT/gi_attack_grid.png" 2>/dev/null
  say "gradinversion benchmark: $GI_IT iterations, B in {$GI_B}, both regimes"
  # shellcheck disable=SC2086
  timeout 200 python3 -m benchmarks.gradinversion --scale gpu --device $DEV --iterations $GI_IT \
    --batch-sizes $GI_B --skip-labels --group-batches 0 "${GI_EXTRA[@]}" --out "$RUNS/gi/gradinversion_gpu.json" \
    || say "gradinversion benchmark: exit $?"
  cp "$RUNS/gi/gradinversion_gpu.json" "$OUT/" 2>/dev/null
  cp "$RUNS/gi/gradinversion-calibrated-b8.png" "$OUT/gradinversion_gpu_calibrated_b8.png" 2>/dev/null
}

part_gi_cells() {
  # the six cells (regime x B) as parallel processes on the one GPU (each is bound by its host thread launching
  # small kernels), ours against breaching's invertinggradients (the stronger attack in every CPU cell), then merged;
  # each cell writes its JSON after every finished attack, so a cell cut off by the time limit keeps what it did.
  # GI_CELL_SEED_PROCS=K: each cell's K starts run as K processes of one seed each (--seed-start), joined by --merge;
  # keep cells x K near 6 on one H100: at 18 (session 20) each process ran 3x slower than at 5
  local procs=${GI_CELL_SEED_PROCS:-1} seeds=${GI_CELL_SEEDS:-1}
  [ "$procs" -gt 1 ] && seeds=1
  say "gradinversion cells in parallel: $GI_CELL_IT iterations, ours vs invertinggradients, $procs process(es) x $seeds seed(s) per cell"
  local parts=()
  for regime in trained calibrated; do
    for B in $GI_CELL_B; do
      for ((s = 0; s < procs; s++)); do
        mkdir -p "$RUNS/gi_cells/s$s"
        # shellcheck disable=SC2086
        OMP_NUM_THREADS=$([ "$procs" -gt 1 ] && echo 1 || echo "$OMP_NUM_THREADS") timeout $GI_CELL_LIMIT \
          python3 -m benchmarks.gradinversion --device $DEV --iterations $GI_CELL_IT \
          --regimes $regime --batch-sizes $B --attacks invertinggradients --skip-labels --group-batches 0 \
          --timing-pairs 0 --seeds "$seeds" --seed-start $s --out "$RUNS/gi_cells/s$s/$regime-b$B.json" \
          > "$RUNS/gi_cell_$regime-b$B-s$s.log" 2>&1 &
        parts+=("$RUNS/gi_cells/s$s/$regime-b$B.json")
      done
    done
  done
  wait
  grep -h "PSNR \|Error\|error" "$RUNS"/gi_cell_*.log
  local have=()
  for f in "${parts[@]}"; do [ -f "$f" ] && have+=("$f"); done
  python3 -m benchmarks.gradinversion --merge "${have[@]}" --out "$OUT/gradinversion_gpu_cells.json" \
    || say "gradinversion merge: exit $?"
  for ((s = 0; s < procs; s++)); do
    mkdir -p "$OUT/s$s"
    cp "$RUNS"/gi_cells/s$s/*.json "$OUT/s$s/" 2>/dev/null
  done
  cp "$RUNS"/gi_cells/s0/*.png "$OUT/" 2>/dev/null
  cp "$RUNS"/gi_cell_*.log "$OUT/" 2>/dev/null
}

part_lsgm_budget() {
  # does a longer training budget move the NFE ratio (benchmarks/lsgm.py's 3x goal)? On the CPU, 1,600 -> 3,200 steps
  # made LSGM's ODE stiffer at tol 1e-5. Each (dataset, budget, model) is one process on the one GPU; every process
  # writes its JSON as soon as its model is profiled, so a cut process loses only itself.
  say "lsgm NFE against training budget: steps {$BUDGETS}, MNIST and OMNIGLOT, LSGM and data-space in parallel"
  local d steps m pid
  local -A job=()
  rm -rf "$RUNS/budget"  # a warm machine's earlier run must not be merged with this one's
  mkdir -p "$RUNS/budget"
  for d in mnist-test omniglot-small1; do
    for steps in $BUDGETS; do
      for m in lsgm data_space; do
        OMP_NUM_THREADS=1 timeout "$BUDGET_LIMIT" python3 -m benchmarks.lsgm_time_scale --data $d --device $DEV \
          --time-scales 1000 --tols 1e-3,1e-5 --steps "$steps" --data-steps "$steps" --models $m \
          --out "$RUNS/budget/$d-$steps-$m.json" > "$RUNS/budget/$d-$steps-$m.log" 2>&1 &
        job[$!]="$d $steps $m"
      done
    done
  done
  for pid in "${!job[@]}"; do
    wait "$pid" || say "lsgm budget ${job[$pid]}: exit $? (124 = cut by the ${BUDGET_LIMIT} s limit)"
  done
  mkdir -p "$OUT/lsgm_budget"
  for d in mnist-test omniglot-small1; do
    for steps in $BUDGETS; do
      local have=()
      for m in lsgm data_space; do [ -f "$RUNS/budget/$d-$steps-$m.json" ] && have+=("$RUNS/budget/$d-$steps-$m.json"); done
      [ ${#have[@]} -lt 2 ] && say "lsgm budget $d $steps: ${#have[@]} of 2 models finished; no NFE ratio"
      [ ${#have[@]} -gt 0 ] && { python3 -m benchmarks.lsgm_time_scale --merge "${have[@]}" --device $DEV \
        --out "$OUT/lsgm_budget/$d-$steps.json" > /dev/null || say "lsgm budget merge $d $steps: exit $?"; }
    done
  done
  cp "$RUNS"/budget/*.json "$RUNS"/budget/*.log "$OUT/lsgm_budget/" 2>/dev/null
  tail -n 3 "$RUNS"/budget/*.log
}

for part in ${PARTS:-c10 paper gi}; do
  "part_$part"
done
if [[ " ${PARTS:-c10 paper gi} " == *" c10 "* || " ${PARTS:-c10 paper gi} " == *" paper "* ]]; then
  cost=()  # only the parts that ran
  [ -d "$C10" ] && cost+=(--run cifar10="$C10")
  [ -d "$PAPER" ] && cost+=(--run paper-cifar10="$PAPER")
  for v in train sample eval; do
    [ -s "$RUNS/c10_$v.json" ] && cost+=(--verb "$([ $v = eval ] && echo evaluate || echo $v)=$RUNS/c10_$v.json")
  done
  python3 -m benchmarks.lsgm_gpu_cost "${cost[@]}" --device $DEV --out "$OUT/${LSGM_GPU_OUT:-lsgm_gpu.json}" \
    || say "lsgm_gpu_cost: exit $?"
fi
say done
# the device tool brings back at most 8 files (session 20 lost the merged JSON to that): everything in one tarball,
# plus the tarball's listing; the slot's own log, if the caller tees it into $OUT, is left beside them
(cd "$OUT" && find . -type f ! -name slot.tgz ! -name slot.log ! -name slot_files.txt | sort > slot_files.txt \
  && tar czf slot.tgz -T slot_files.txt && xargs rm -f < slot_files.txt && find . -mindepth 1 -type d -empty -delete)
ls -la "$OUT"
