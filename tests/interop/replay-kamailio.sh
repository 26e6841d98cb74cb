#!/usr/bin/env bash
# The Kamailio + app_python3 + PyJWT peer (kamailio-pyjwt.cfg) on loopback, and the model's
# catalogue replayed against it (`mcx-authz replay --target kamailio-pyjwt.toml`).
#
#   tests/interop/replay-kamailio.sh [--port N] [--report PATH] [replay options ...]
#
# Makes a lab IdMS in a scratch dir, gives the peer its public key, starts Kamailio on
# 127.0.0.1:PORT (default 5075), runs the replay (report PATH.md and PATH.json, default
# ./replay-kamailio-pyjwt) and stops Kamailio by PID. Exit status: the replay's (0: no
# divergence, 1: divergences, 2: an error). MCX_AUTHZ: the binary (default target/release).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
mcx=${MCX_AUTHZ:-$repo/target/release/mcx-authz}
port=5075
report=$PWD/replay-kamailio-pyjwt
while [[ $# -gt 0 ]]; do
  case $1 in
    --port) port=$2; shift 2 ;;
    --report) report=$2; shift 2 ;;
    *) break ;;
  esac
done
for tool in kamailio /usr/bin/python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (bash .ci/install-deps.sh)" >&2; exit 2; }
done
/usr/bin/python3 -c 'import jwt, cryptography' || { echo "PyJWT missing (bash .ci/install-deps.sh)" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/mcx-replay-kam.XXXXXX")
kam_pid=""
cleanup() {
  if [[ -n $kam_pid ]]; then kill "$kam_pid" 2>/dev/null || true; wait "$kam_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT

"$mcx" token keygen --data-dir "$work/lab" >/dev/null
/usr/bin/python3 - "$work/lab/idms-es256.pem" "$work/idms-public.pem" <<'PY'
import sys
from cryptography.hazmat.primitives import serialization
k = serialization.load_pem_private_key(open(sys.argv[1], "rb").read(), None)
open(sys.argv[2], "wb").write(k.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
PY
mkdir -p "$work/run"
MCX_JWT_PUBKEY=$work/idms-public.pem kamailio -f "$here/kamailio-pyjwt.cfg" -DD -E -Y "$work/run" -m 64 \
  -A "SIP_PORT=$port" -A "PY_SCRIPT=\"$repo/bench/kamailio_jwt.py\"" >"$work/kamailio.log" 2>&1 &
kam_pid=$!
# Ready when it answers OPTIONS... or at least listens.
for _ in $(seq 1 50); do
  if ss -Hlun "sport = :$port" 2>/dev/null | grep -q .; then break; fi
  kill -0 "$kam_pid" 2>/dev/null || { cat "$work/kamailio.log" >&2; exit 2; }
  sleep 0.1
done
set +e
"$mcx" replay --target "$here/kamailio-pyjwt.toml" --catalogue --server "127.0.0.1:$port" \
  --data-dir "$work/lab" --report "$report" "$@"
rc=$?
set -e
kill -0 "$kam_pid" 2>/dev/null || { echo "kamailio died during the replay:" >&2; tail -20 "$work/kamailio.log" >&2; rc=2; }
exit $rc
