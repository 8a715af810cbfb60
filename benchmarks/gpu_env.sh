# Sourced by every benchmarks/gpu_*.sh on the GPU machine, whose image (Python 3.12, torch, transformers, accelerate)
# lacks diffusers, pydantic and torch-pruning and reaches no network: installs the wheels carried in .whl (device tool:
# carry [".whl"]) into /tmp/site unless a call before installed the same ones, and puts them, vipkit and its in-tree
# plugins on the path. Make .whl once, here (.gitignore keeps it out of git):
#   pip download --no-deps -d .whl diffusers==0.42.1 importlib_metadata zipp pydantic==2.14.4 annotated_types \
#     typing_inspection torch-pruning==1.6.1
#   pip download --no-deps -d .whl pydantic_core==2.50.5 --python-version 3.12 --platform manylinux2014_x86_64 \
#     --only-binary=:all:
wheels=$(ls .whl)
if [ "$(cat /tmp/site/.wheels 2>/dev/null)" != "$wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  echo "$wheels" > /tmp/site/.wheels
fi
export PYTHONPATH=/tmp/site:$PWD:$PWD/plugins PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
