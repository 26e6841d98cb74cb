#!/usr/bin/env bash
# SIPp UE -> Kamailio (tests/interop/kamailio-core.cfg) -> mcx-authz, on loopback.
#
#   tests/interop/run.sh [--mcx HOST:PORT [--admin http://HOST:PORT]] [--core-port N]
#                        [--transport udp|tcp|tls [--tls-dir DIR]] CSV
#
# CSV: SIPp -inf file (SEQUENTIAL; impu;client_id;mc_id;token), one user.
# Without --mcx a SIPp UAS (fake_mcx_uas.xml) stands in for mcx-authz and asserts that the
# third-party REGISTER and the core-asserted P-Asserted-Identity arrive. With --mcx the UE talks
# through the core to a running mcx-authz; with --admin the script also checks GET /bindings
# after the PUBLISH (the IMPU bound, the forged identities not) and after the de-registration
# (nothing left for the IMPU). Every process it starts is stopped by PID on exit.
# --transport tls: the UE talks UDP to the core and the core reaches mcx-authz over TLS,
# presenting the client certificate of --tls-dir (made by `mcx-authz tls-lab-certs`: ca.pem,
# client.pem, client.key; the core listens for TLS on core port + 3).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mcx=""
admin=""
core_port=$(( 21000 + RANDOM % 10000 ))
transport=udp
tls_dir=""
while [[ $# -gt 1 ]]; do
  case $1 in
    --mcx) mcx=$2; shift 2 ;;
    --admin) admin=$2; shift 2 ;;
    --core-port) core_port=$2; shift 2 ;;
    --transport) transport=$2; shift 2 ;;
    --tls-dir) tls_dir=$2; shift 2 ;;
    *) break ;;
  esac
done
[[ $# -eq 1 ]] || { sed -n '2,14p' "$0"; exit 64; }
csv=$1
case $transport in
  udp) sipp_t=u1 ;;
  tcp) sipp_t=t1 ;;
  tls) sipp_t=u1; [[ -n $tls_dir ]] || { echo "--transport tls needs --tls-dir" >&2; exit 64; } ;;
  *) echo "transport udp|tcp|tls" >&2; exit 64 ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/mcx-interop.XXXXXX")
pids=()
cleanup() {
  if [[ -n ${ue_pid:-} ]]; then kill "$ue_pid" 2>/dev/null || true; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 143' TERM INT

fake_port=""
if [[ -z $mcx ]]; then
  fake_port=$(( core_port + 1 ))
  mcx=127.0.0.1:$fake_port
  timeout 60 sipp -sf "$here/fake_mcx_uas.xml" -t "$sipp_t" -i 127.0.0.1 -p "$fake_port" -m 3 \
    -inf "$csv" -nostdin -timeout 40s -default_behaviors all,-bye \
    -trace_err -error_file "$work/fake.err" -trace_logs -log_file "$work/fake.log" \
    >"$work/fake.out" 2>&1 &
  fake_pid=$!
  pids+=("$fake_pid")
fi
case ${mcx%:*} in 127.*|localhost) ;; *) echo "refusing non-loopback --mcx $mcx" >&2; exit 64 ;; esac
mcx_uri="sip:$mcx"
[[ $transport == tcp ]] && mcx_uri="$mcx_uri;transport=tcp"
tls_args=()
if [[ $transport == tls ]]; then
  mcx_uri="$mcx_uri;transport=tls"
  tls_dir=$(cd "$tls_dir" && pwd)
  cat >"$work/tls.cfg" <<EOF
[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
certificate = $tls_dir/client.pem
private_key = $tls_dir/client.key

[client:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
certificate = $tls_dir/client.pem
private_key = $tls_dir/client.key
ca_list = $tls_dir/ca.pem
server_name = mcx.example.org
EOF
  tls_args=(-A WITH_TLS -A "TLS_CFG=\"$work/tls.cfg\"" -A "CORE_TLS_PORT=$(( core_port + 3 ))")
fi

mkdir -p "$work/run"
timeout 90 kamailio -f "$here/kamailio-core.cfg" -DD -E -Y "$work/run" \
  -A "CORE_PORT=$core_port" -A "MCX_URI=\"$mcx_uri\"" "${tls_args[@]}" >"$work/core.log" 2>&1 &
core_pid=$!
pids+=("$core_pid")
for _ in $(seq 50); do
  grep -q "udp: 127.0.0.1" "$work/core.log" 2>/dev/null && break
  sleep 0.1
done
sleep 0.5
if ! kill -0 "$core_pid" 2>/dev/null; then
  echo "FAIL kamailio core did not start:"; tail -n 15 "$work/core.log"; exit 1
fi

ue_port=$(( core_port + 2 ))
status=0
# The UE runs in the background and is waited for, so that a SIGTERM to this script runs the
# trap at once (not after the UE) and the trap stops the UE too; its PID is forgotten once reaped.
ue_pid=""
ue() {
  timeout 40 sipp -sf "$here/$1.xml" "127.0.0.1:$core_port" -t "$sipp_t" -i 127.0.0.1 \
    -p "$ue_port" -m 1 -inf "$csv" -nostdin -timeout 30s -default_behaviors all,-bye \
    -trace_err -error_file "$work/$1.err" -trace_logs -log_file "$work/$1.log" \
    >"$work/$1.out" 2>&1 &
  ue_pid=$!
  local rc=0
  wait "$ue_pid" || rc=$?
  ue_pid=""
  return "$rc"
}
impu=$(sed -n 2p "$csv" | cut -d';' -f1)

if ue ue_register_publish; then echo "PASS UE REGISTER + PUBLISH through the core"; else
  echo "FAIL UE REGISTER + PUBLISH through the core"; status=1; fi
if [[ -n $admin ]]; then
  b=$(curl -sf "$admin/bindings")
  if grep -q "\"$impu\"" <<<"$b" && ! grep -q "intruder\|not-mine" <<<"$b"; then
    echo "PASS /bindings holds $impu (and no forged identity)"
  else echo "FAIL /bindings after PUBLISH: $b"; status=1; fi
fi
if ue ue_deregister; then echo "PASS UE de-registration through the core"; else
  echo "FAIL UE de-registration through the core"; status=1; fi
if [[ -n $admin ]]; then
  sleep 0.3
  b=$(curl -sf "$admin/bindings")
  if ! grep -q "\"$impu\"" <<<"$b"; then echo "PASS /bindings has nothing for $impu"
  else echo "FAIL /bindings after de-registration: $b"; status=1; fi
fi
if [[ -n $fake_port ]]; then
  [[ $status -eq 0 ]] || kill "$fake_pid" 2>/dev/null || true
  if wait "$fake_pid"; then echo "PASS fake mcx-authz saw third-party REGISTER x2 and PUBLISH with PAI <$impu>"
  else echo "FAIL fake mcx-authz UAS (see $work/fake.*)"; status=1; fi
fi
if [[ $status -ne 0 ]]; then
  echo "logs kept in $work"; tail -n 20 "$work"/*.err "$work/core.log" 2>/dev/null || true
else
  rm -rf "$work"
fi
exit "$status"
