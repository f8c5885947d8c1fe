#!/usr/bin/env bash
# Prepare the GPU figures of issue 16 HERE (a machine with PyPI), for bench/gpu_run.sh THERE (a lent GPU
# machine with no network, whose image has PyTorch, transformers and tokenizers but not nas's other needs):
#   .whl/       the missing wheels (Python 3.12, x86-64), installed there into /tmp/site
#   .gpu_data/  the 20 Gutenberg books (../shared does not travel), read by gpu-files there
# Both are ignored by git and travel with `carry: [".whl", ".gpu_data"]` (about 40 MiB of the 64 MiB).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl .gpu_data
mkdir -p .whl .gpu_data
cp -r ../shared/data/gutenberg .gpu_data/gutenberg
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
# nas's requirements that the image lacks, and theirs (the image has numpy, scipy, pandas, pyarrow, typer,
# rich, regex, pyyaml, safetensors, huggingface-hub, httpx, fsspec, xxhash, tqdm, requests, narwhals)
for wheel in optuna==5.0.0 alembic==1.20.1 sqlalchemy==2.1.9 greenlet colorlog==6.12.0 mako==1.4.3 \
             pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
             datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 cmaes plotly==7.1.0; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl "$wheel"
done
du -sh .whl .gpu_data
