#!/usr/bin/env bash
# The main job: the end-to-end run on bundled real data (mnist5k), creating the
# Python 3.10 environment first if it is missing.
#   1. train the default stable-DLIF MLP with Gaussian-noise training + MS-MPPD
#      (reused, or resumed, when runs/ already holds it);
#   2. evaluate its float robustness under Gaussian noise, FGSM and PGD and write
#      reports/mnist5k-mlp-dlif/robustness.{json,md,png}.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
config="${1:-models/mnist5k-mlp-dlif.yaml}"
name="$(basename "$config" .yaml)"
run="runs/$name"
resume=()
[ -f "$run/checkpoint.pt" ] && resume=(--resume)
./nd train --config "$config" --out "$run" "${resume[@]}"
./nd evaluate "$run" \
    --noise gaussian:0,0.05,0.1,0.2 \
    --noise uniform:0,0.1,0.2,0.3 \
    --noise salt-pepper:0,0.05,0.1 \
    --noise fgsm:0,2/255,4/255,8/255 \
    --noise pgd:0,2/255,4/255,8/255 \
    --report "reports/$name"
