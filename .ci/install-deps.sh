#!/usr/bin/env bash
# .ci/install-deps.sh: the Debian packages the SIPp suites, the Kamailio interop test and
# bench/sip-load.sh need. Idempotent (installs only what is missing), quiet, non-interactive.
#
#   sipp                    <- sip-tester
#   kamailio (+ modules)    <- kamailio (sl, tm, registrar, usrloc, uac, htable, textops, ...)
#   app_python3             <- kamailio-python3-modules
#   tls (SIP over TLS)      <- kamailio-tls-modules
#   PyJWT + cryptography    <- python3-jwt, python3-cryptography (pip fallback: pyjwt cryptography)
#   ss, curl                <- iproute2, curl
#   xmlsec1, openssl        <- xmlsec1, openssl (TS 33.180 clause 9 interop oracle, KDF oracle)
#   initdb, postgres        <- postgresql (tests/durability.rs starts a throw-away cluster in a
#                              temp dir on a loopback port and stops it by PID; the Debian
#                              package's own cluster is not used)
set -euo pipefail

packages=(sip-tester kamailio kamailio-tls-modules kamailio-python3-modules python3-jwt python3-cryptography iproute2 curl xmlsec1 openssl postgresql)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi

if [[ ${#missing[@]} -gt 0 ]]; then
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Kamailio's Debian package may start a system kamailio on 5060; the tests start their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet kamailio 2>/dev/null; then
  $sudo systemctl stop kamailio || true
fi

# app_python3 embeds the system python3: PyJWT must import there.
if ! /usr/bin/python3 -c 'import jwt, cryptography' 2>/dev/null; then
  /usr/bin/python3 -m pip install --quiet --break-system-packages pyjwt cryptography 2>/dev/null \
    || /usr/bin/python3 -m pip install --quiet pyjwt cryptography
fi

sipp -v 2>&1 | grep -m1 -o 'SIPp v[^ ]*' || true
kamailio -v 2>&1 | grep -m1 -o 'version: kamailio [^ ]*' || true
xmlsec1 --version 2>&1 | head -1 || true
