#!/usr/bin/env bash
# Creates the neural-tangents peer environment: NT 0.6.5 imports only on jax==0.4.23 with numpy<2
# and scipy<1.13 on Python 3.11. It is an oracle and benchmark peer, never a kjax dependency.
#   bash benchmarks/peers/setup_nt.sh          -> benchmarks/.peers/nt/bin/python
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${NT_VENV:-$here/.peers/nt}"
py="${NT_PYTHON:-}"
if [ -z "$py" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null && "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      py="$cand"; break
    fi
  done
fi
[ -n "$py" ] || { echo "setup_nt.sh: neural-tangents 0.6.5 needs Python 3.11; none found" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import neural_tangents' 2>/dev/null; then
  "$py" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q "jax==0.4.23" "jaxlib==0.4.23" "numpy<2" "scipy<1.13" \
    "neural-tangents==0.6.5" "flax<0.8" "ml_dtypes<0.4"
fi
"$venv/bin/python" -c 'import neural_tangents as nt, jax; print("neural-tangents", nt.__version__, "on jax", jax.__version__)'
