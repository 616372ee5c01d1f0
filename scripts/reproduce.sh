#!/usr/bin/env bash
# Retrain every shipped checkpoint from scratch with the committed configs and regenerate
# docs/results. About 7 hours on a 2-core CPU. Existing checkpoints are moved aside first.
set -euo pipefail
UPO=${UPO:-.venv/bin/upo}
PY=${PY:-.venv/bin/python}
stamp=$(date +%Y%m%d-%H%M%S)
mkdir -p runs
for d in checkpoints/sudoku9-mdm checkpoints/sudoku4-mdm checkpoints/sudoku9-policy-pretrained checkpoints/sudoku9-policy \
  checkpoints/addition-mdm checkpoints/addition-policy checkpoints/addition-policy-seed1 checkpoints/zebra-mdm \
  checkpoints/zebra-policy checkpoints/zebra-policy-seed1 checkpoints/sums-mdm checkpoints/sums-policy \
  checkpoints/sums-policy-seed0; do
  [ -d "$d" ] && mv "$d" "runs/replaced-$stamp-$(basename "$d")"
done
$UPO mdm train --config configs/mdm-sudoku9.yaml --out checkpoints/sudoku9-mdm
$UPO mdm train --config configs/mdm-sudoku4.yaml --out checkpoints/sudoku4-mdm
bash scripts/make_data.sh
bash scripts/calibrate_mdm.sh
$UPO policy pretrain --config configs/policy-pretrain-sudoku9.yaml --out checkpoints/sudoku9-policy-pretrained
$UPO policy train --config configs/upo-sudoku9.yaml --out checkpoints/sudoku9-policy
bash experiments/scripts/ablations.sh
bash experiments/scripts/diagnosis.sh
bash scripts/evaluate_results.sh
$PY scripts/results.py
# The other tasks: data, MDMs, the addition and Zebra policies (2 seeds each) and their test tables.
bash scripts/make_task_data.sh
$UPO mdm train --config configs/mdm-addition.yaml --out checkpoints/addition-mdm --threads 1
# The Zebra MDM trains in two stages: the second starts from the first's weights (init_from).
$UPO mdm train --config configs/mdm-zebra4.yaml --out runs/zebra-mdm --threads 2
$UPO mdm train --config configs/mdm-zebra4-stage2.yaml --out checkpoints/zebra-mdm --threads 2
$UPO policy train --config configs/upo-addition.yaml --out checkpoints/addition-policy --seed 0 --threads 1
$UPO policy train --config configs/upo-addition.yaml --out checkpoints/addition-policy-seed1 --seed 1 --threads 1
$UPO policy train --config configs/upo-zebra4.yaml --out checkpoints/zebra-policy --seed 0 --threads 1
$UPO policy train --config configs/upo-zebra4.yaml --out checkpoints/zebra-policy-seed1 --seed 1 --threads 1
bash scripts/tasks_results.sh all
# The sums task, where the learned order wins (checkpoints/headline.yaml): MDM, 2 seeds, tables.
$UPO mdm train --config configs/mdm-sums.yaml --out checkpoints/sums-mdm --threads 1
$UPO policy train --config configs/upo-sums.yaml --out checkpoints/sums-policy --seed 1 --threads 1
$UPO policy train --config configs/upo-sums.yaml --out checkpoints/sums-policy-seed0 --seed 0 --threads 1
bash scripts/sums_results.sh
