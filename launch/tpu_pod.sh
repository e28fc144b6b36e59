#!/usr/bin/env bash
# TPU pod slice: run the same command on every worker; JAX finds the coordinator itself.
#   gcloud compute tpus tpu-vm ssh NAME --worker=all --command="cd repthesis && bash launch/tpu_pod.sh --algo=hpa3c --devices=32"
set -euo pipefail
. .venv/bin/activate
python launch/multihost.py "$@"
