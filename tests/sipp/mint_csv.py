#!/usr/bin/env python3
"""Stand-in token minter for the SIPp suites and the Kamailio benchmark configurations.

Writes SIPp `-inf` CSV files (first line SEQUENTIAL, fields separated by ';') holding ES256
access tokens shaped like the lab IdMS's (TS 33.180 B.2.2 claims: iss, sub, client_id, scope,
mcptt_id, iat, exp, jti). It signs with a P-256 key of its own (created in --dir unless
--key names a PEM private key), and writes that key's public half as `idms-public.pem`.

mcx-authz trusts only its own lab IdMS (`mcx-authz token mint`), so run against mcx-authz the
CSVs must come from `mcx-authz token mint-csv` (or this script with --key pointing at the lab
IdMS's private key). This script is what exercises Kamailio + PyJWT and the scenarios before
that: it needs only python3-jwt and python3-cryptography (Debian) or `pip install pyjwt
cryptography`.

  mint_csv.py --dir DIR suite           # one CSV per tests/sipp scenario: DIR/<scenario>.csv
  mint_csv.py --dir DIR users N         # DIR/users.csv: impu;client_id;mc_id;token, N users
"""

import argparse
import os
import sys
import time
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ISSUER = "https://idms.mcx-lab.invalid"
SCOPE_PTT = "openid 3gpp:mc:ptt_service"
SCOPE_VIDEO_ONLY = "openid 3gpp:mc:video_service"


def load_or_create_key(path):
    """The signing key at `path` (PEM, PKCS#8), created there if absent."""
    if os.path.exists(path):
        with open(path, "rb") as f:
            return serialization.load_pem_private_key(f.read(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    with open(path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return key


def write_public(key, path):
    with open(path, "wb") as f:
        f.write(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


class Minter:
    def __init__(self, key, kid=None):
        self.key = key
        self.kid = kid
        self.now = int(time.time())

    def token(self, mc_id, client_id="mcptt_client", scope=SCOPE_PTT, expires_in=3600, iat=None):
        iat = self.now if iat is None else iat
        claims = {
            "iss": ISSUER,
            "sub": mc_id.split(":", 1)[-1].split("@", 1)[0],
            "client_id": client_id,
            "scope": scope,
            "mcptt_id": mc_id,
            "iat": iat,
            "exp": iat + expires_in,
            "jti": str(uuid.uuid4()),
        }
        headers = {"kid": self.kid} if self.kid else None
        return jwt.encode(claims, self.key, algorithm="ES256", headers=headers)


def write_csv(path, rows):
    with open(path, "w") as f:
        f.write("SEQUENTIAL\n")
        for row in rows:
            for field in row:
                if ";" in field or "\n" in field:
                    raise ValueError(f"field holds a separator: {field!r}")
            f.write(";".join(row) + "\n")


def ids(tag, scenario):
    """A fresh IMPU, second IMPU and MC client ID for one scenario run."""
    impu = f"sip:ue-{tag}-{scenario.replace('_', '-')}@ims.example.org"
    return impu, impu.replace("@", "-b@"), f"urn:uuid:{uuid.uuid4()}"


def suite(m, forger, d, tag):
    """One CSV per functional scenario, each with its own IMPUs and client ID; `tag` keeps them
    distinct between runs against one server."""
    alice = "sip:alice@example.org"
    bob = "sip:bob@example.org"
    t = m.token
    rows = {
        "register_authorize": lambda i, ib, c: [i, c, alice, t(alice)],
        "refresh_stale_etag": lambda i, ib, c: [i, c, alice, t(alice)],
        "settings_only": lambda i, ib, c: [i, c, alice, t(alice), bob],
        "user_switch": lambda i, ib, c: [i, c, alice, t(alice), bob, t(bob)],
        "impu_change": lambda i, ib, c: [i, c, alice, t(alice), ib, t(alice)],
        "deregistration": lambda i, ib, c: [i, c, alice, t(alice), t(alice)],
        "log_off": lambda i, ib, c: [i, c, alice, t(alice), t(alice)],
        "bad_tokens": lambda i, ib, c: [
            i,
            c,
            alice,
            t(alice),
            t(alice, iat=m.now - 7200, expires_in=3600),
            forger.token(alice),
            t(alice, scope=SCOPE_VIDEO_ONLY),
        ],
    }
    for name, row in rows.items():
        write_csv(os.path.join(d, name + ".csv"), [row(*ids(tag, name))])


def users(m, d, n, prefix):
    rows = (
        (
            f"sip:{prefix}{i:07d}@ims.example.org",
            f"urn:uuid:{uuid.UUID(int=i + 1)}",
            f"sip:user{i:07d}@example.org",
            m.token(f"sip:user{i:07d}@example.org", expires_in=86400),
        )
        for i in range(n)
    )
    write_csv(os.path.join(d, "users.csv"), rows)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dir", required=True, help="output directory")
    p.add_argument("--key", help="PEM private key to sign with (default DIR/idms-private.pem)")
    p.add_argument("--kid", help="kid header to put in the tokens")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("suite")
    s.add_argument("--tag", default=str(os.getpid()))
    u = sub.add_parser("users")
    u.add_argument("n", type=int)
    u.add_argument("--prefix", default="ue")
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    key = load_or_create_key(a.key or os.path.join(a.dir, "idms-private.pem"))
    write_public(key, os.path.join(a.dir, "idms-public.pem"))
    m = Minter(key, a.kid)
    if a.cmd == "suite":
        forger = Minter(ec.generate_private_key(ec.SECP256R1()), a.kid)
        suite(m, forger, a.dir, a.tag)
    else:
        users(m, a.dir, a.n, a.prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
