"""Kamailio app_python3 module: MC service authorization the way a lab scripts it today.

Loaded by bench/kamailio-pyjwt.cfg (issue 6, configuration c). The routing script has already
done the registrar work (save/registered); this module handles the PUBLISH of TS 24.379 7.2.2 -
7.2.3 / RFC 3903 and the binding clean-up on de-registration and service log-off:

- token PUBLISH: the access token is taken out of the mcptt-info body, verified (ES256, PyJWT)
  against the IdMS public key, its scope and mcptt_id checked, and the binding
  IMPU|client -> MC ID kept in the Kamailio htable `bind` (shared by all worker processes);
  200 with SIP-ETag/Expires, or 403 with Warning 399 "101 service authorisation failed";
- settings-only PUBLISH: 200 if the client is bound to the named MC ID, else 404 with
  Warning 399 "141 user unknown to the participating function";
- body-less PUBLISH with SIP-If-Match: refresh (new tag) or, with Expires: 0, removal;
  unknown/stale tag: 412.

Environment:
  MCX_JWT_PUBKEY   PEM public key (SPKI) of the IdMS (required), parsed once at start
  MCX_JWT_ALGS     accepted JWS algorithms, comma-separated (default ES256; RS256 for RSA keys)
  MCX_JWT_ISSUER   expected iss (default https://idms.mcx-lab.invalid; empty: not checked)
  MCX_WARN_HOST    host in the Warning header (default mcx.example.org)

Deliberately plain (regular expressions on the body, one htable per index), like a lab script;
it is the comparison point, not a second implementation. Python dicts would be per worker
process, so all state lives in htables.
"""

import os
import re
import secrets

import jwt
import KSR as KSR
from cryptography.hazmat.primitives import serialization

SCOPE = "3gpp:mc:ptt_service"
WARN_HOST = os.environ.get("MCX_WARN_HOST", "mcx.example.org")
ISSUER = os.environ.get("MCX_JWT_ISSUER", "https://idms.mcx-lab.invalid")
ALGS = [a.strip() for a in os.environ.get("MCX_JWT_ALGS", "ES256").split(",") if a.strip()]

RE_TOKEN = re.compile(r"<mcptt-access-token[^>]*>\s*<mcpttString>([^<]*)</mcpttString>")
RE_CLIENT = re.compile(r"<mcptt-client-id[^>]*>\s*<mcpttString>([^<]*)</mcpttString>")
RE_REQ_URI = re.compile(r"<mcptt-request-uri[^>]*>\s*<mcpttURI>([^<]*)</mcpttURI>")
RE_URI = re.compile(r"<([^>]*)>")


def mod_init():
    return Authz()


def uri_of(value):
    """The URI inside a name-addr (`<sip:...>;params`), or the value itself."""
    if value is None:
        return None
    m = RE_URI.search(value)
    return m.group(1) if m else value.strip().split(";", 1)[0]


class Authz:
    def __init__(self):
        # Parsed once, not per token (PyJWT accepts the key object).
        with open(os.environ["MCX_JWT_PUBKEY"], "rb") as f:
            self.key = serialization.load_pem_public_key(f.read())

    def child_init(self, rank):
        return 0

    # -- replies -----------------------------------------------------------------------------

    def reply(self, code, reason, *headers):
        for h in headers:
            KSR.hdr.append_to_reply(h + "\r\n")
        KSR.sl.send_reply(code, reason)
        return 1

    def forbidden_101(self):
        return self.reply(
            403, "Forbidden", f'Warning: 399 {WARN_HOST} "101 service authorisation failed"'
        )

    def unknown_141(self):
        return self.reply(
            404,
            "Not Found",
            f'Warning: 399 {WARN_HOST} "141 user unknown to the participating function"',
        )

    # -- state (htables `bind`: "impu|client" -> "mc_id|etag"; `etag`: etag -> "impu|client";
    # `impu`: impu -> space-separated client IDs) ------------------------------------------------

    @staticmethod
    def get(table, key):
        v = KSR.htable.sht_get(table, key)
        return v if isinstance(v, str) else None

    def put_binding(self, bkey, mc_id, expires):
        old = self.get("bind", bkey)
        if old is not None:
            KSR.htable.sht_rm("etag", old.split("|", 1)[1])
        else:
            # Per-IMPU index of client IDs, for de-registration.
            impu, client = bkey.split("|", 1)
            clients = self.get("impu", impu)
            KSR.htable.sht_sets("impu", impu, client if clients is None else f"{clients} {client}")
        etag = secrets.token_hex(8)
        KSR.htable.sht_sets("bind", bkey, f"{mc_id}|{etag}")
        KSR.htable.sht_sets("etag", etag, bkey)
        return self.reply(200, "OK", f"SIP-ETag: {etag}", f"Expires: {expires}")

    def drop_binding(self, bkey):
        old = self.get("bind", bkey)
        if old is not None:
            KSR.htable.sht_rm("etag", old.split("|", 1)[1])
            KSR.htable.sht_rm("bind", bkey)

    def drop_impu(self, impu):
        """Every binding of `impu` (de-registration, MCPTT log-off by re-registration)."""
        clients = self.get("impu", impu)
        if clients is None:
            return
        for client in clients.split(" "):
            self.drop_binding(f"{impu}|{client}")
        KSR.htable.sht_rm("impu", impu)

    # -- entry points (python_exec) ------------------------------------------------------------

    def deregister(self, msg):
        """Third-party REGISTER with Expires: 0, or a re-registration without +g.3gpp.mcptt."""
        self.drop_impu(uri_of(KSR.pv.get("$hdr(To)")))
        return 1

    def publish(self, msg):
        if (KSR.pv.get("$hdr(Event)") or "").strip() != "poc-settings":
            return self.reply(489, "Bad Event")
        impu = uri_of(KSR.pv.get("$hdr(P-Asserted-Identity)"))
        if not impu:
            return self.reply(403, "Forbidden")
        exp_hdr = KSR.pv.get("$hdr(Expires)")
        try:
            expires = 3600 if exp_hdr is None else int(exp_hdr.strip())
        except ValueError:
            return self.reply(400, "Bad Expires")
        if_match = KSR.pv.get("$hdr(SIP-If-Match)")
        target = None
        if if_match is not None:
            target = self.get("etag", if_match.strip())
            if target is None or not target.startswith(impu + "|"):
                return self.reply(412, "Conditional Request Failed")
            if self.get("bind", target) is None:
                return self.reply(412, "Conditional Request Failed")
        body = KSR.pv.get("$rb") or ""
        if not body.strip():
            if target is None:
                return self.reply(400, "Missing SIP-If-Match")
            if expires == 0:
                self.drop_binding(target)
                return self.reply(200, "OK", "Expires: 0")
            mc_id = self.get("bind", target).split("|", 1)[0]
            return self.put_binding(target, mc_id, expires)
        m_client = RE_CLIENT.search(body)
        if not m_client:
            return self.reply(400, "No mcptt-client-id")
        bkey = f"{impu}|{m_client.group(1).strip()}"
        if target is not None and target != bkey:
            return self.reply(412, "Conditional Request Failed")
        if expires == 0:
            self.drop_binding(bkey)
            return self.reply(200, "OK", "Expires: 0")
        m_token = RE_TOKEN.search(body)
        if m_token:
            try:
                claims = jwt.decode(
                    m_token.group(1).strip(),
                    self.key,
                    algorithms=ALGS,
                    issuer=ISSUER or None,
                    options={"require": ["exp"], "verify_aud": False},
                )
            except jwt.PyJWTError:
                return self.forbidden_101()
            mc_id = claims.get("mcptt_id")
            if SCOPE not in str(claims.get("scope", "")).split() or not isinstance(mc_id, str):
                return self.forbidden_101()
            return self.put_binding(bkey, mc_id, expires)
        m_req = RE_REQ_URI.search(body)
        if m_req:
            bound = self.get("bind", bkey)
            if bound is None or bound.split("|", 1)[0] != m_req.group(1).strip():
                return self.unknown_141()
            return self.put_binding(bkey, m_req.group(1).strip(), expires)
        return self.reply(400, "No token and no mcptt-request-uri")
