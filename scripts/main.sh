#!/usr/bin/env bash
# The main job, end to end on bundled real data (mnist5k), creating the Python
# 3.10 environment first if it is missing:
#   1. train the default stable-DLIF MLP (Gaussian-noise training + MS-MPPD),
#      or reuse / resume the run in runs/;
#   2. quantize it for hw_profiles/loihi2.yaml and export netx HDF5, NIR, ONNX;
#   3. run the float model and the fixed-point network on the test split
#      (emulator: all 1,000 samples; Lava: the first 200) and write
#      runs/<name>/loihi2/report.{json,md,png};
#   4. sweep robustness under input noise and attacks (float, the fixed-point
#      emulator on all samples, Lava on 50 per level) into
#      reports/<name>/robustness.{json,md,png}.
# Usage: scripts/main.sh [models/X.yaml]
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
config="${1:-models/mnist5k-mlp-dlif.yaml}"
name="$(basename "$config" .yaml)"
./nd pipeline --config "$config" --lava-samples "${LAVA_SAMPLES:-200}"
./nd evaluate "runs/$name" --backends float,emulator,lava --lava-samples "${LAVA_SAMPLES_SWEEP:-50}" \
    --noise gaussian:0,0.05,0.1,0.2 \
    --noise uniform:0,0.1,0.2,0.3 \
    --noise salt-pepper:0,0.05,0.1 \
    --noise fgsm:0,2/255,4/255,8/255 \
    --noise pgd:0,2/255,4/255,8/255 \
    --report "reports/$name"
