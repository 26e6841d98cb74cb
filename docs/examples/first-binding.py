#!/usr/bin/env python3
"""Send what a SIP core would forward to mcx-authz for one UE: the third-party REGISTER, then the
PUBLISH carrying the access token (TS 24.379 7.2.2), and print the two responses.

    python3 docs/examples/first-binding.py TOKEN [HOST [PORT]]

Standard library only. The IMPU is sip:ue1@ims.example.org; loopback is a trusted SIP core by
default, so mcx-authz believes the P-Asserted-Identity below.
"""
import socket
import sys
import uuid

token = sys.argv[1]
host = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
port = int(sys.argv[3]) if len(sys.argv) > 3 else 5060
impu = "sip:ue1@ims.example.org"
client_id = "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, impu))

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(3)
sock.connect((host, port))
local_host, local_port = sock.getsockname()


def send(method, uri, headers, body=b""):
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    lines = [
        f"{method} {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {local_host}:{local_port};branch={branch}",
        "Max-Forwards: 70",
        f"Call-ID: {uuid.uuid4().hex}@{local_host}",
        f"CSeq: 1 {method}",
    ] + headers + [f"Content-Length: {len(body)}", "", ""]
    sock.send("\r\n".join(lines).encode() + body)
    reply = sock.recv(65535).decode(errors="replace")
    print(f"{method} -> {reply.splitlines()[0]}")
    for line in reply.splitlines():
        if line.lower().startswith(("sip-etag", "warning", "expires")):
            print("   ", line)
    return reply


# TS 24.229 5.4.1.7: the S-CSCF's third-party REGISTER for the UE's IMPU.
send("REGISTER", "sip:mcx.example.org", [
    "From: <sip:scscf.ims.example.org>;tag=scscf1",
    f"To: <{impu}>",
    "Contact: <sip:scscf.ims.example.org>",
    "Expires: 600",
])

info = f"""<?xml version="1.0" encoding="UTF-8"?>
<mcpttinfo xmlns="urn:3gpp:ns:mcpttInfo:1.0">
  <mcptt-Params>
    <mcptt-access-token type="Normal"><mcpttString>{token}</mcpttString></mcptt-access-token>
    <mcptt-client-id type="Normal"><mcpttString>{client_id}</mcpttString></mcptt-client-id>
  </mcptt-Params>
</mcpttinfo>"""
settings = f"""<?xml version="1.0" encoding="UTF-8"?>
<poc-settings xmlns="urn:oma:params:xml:ns:poc:poc-settings">
  <entity id="{client_id}">
    <am-settings><answer-mode>automatic</answer-mode></am-settings>
  </entity>
</poc-settings>"""
boundary = "mcx-boundary-1"
body = (
    f"--{boundary}\r\nContent-Type: application/vnd.3gpp.mcptt-info+xml\r\n\r\n{info}\r\n"
    f"--{boundary}\r\nContent-Type: application/poc-settings+xml\r\n\r\n{settings}\r\n"
    f"--{boundary}--\r\n"
).encode()

# TS 24.379 7.2.2: PUBLISH with the access token, as the SIP core forwards it.
send("PUBLISH", "sip:mcptt@mcx.example.org", [
    f"From: <{impu}>;tag=ue1",
    f"To: <{impu}>",
    f"P-Asserted-Identity: <{impu}>",
    "Event: poc-settings",
    "Expires: 4294967295",
    "Accept-Contact: *;+g.3gpp.mcptt;require;explicit",
    "P-Preferred-Service: urn:urn-7:3gpp-service.ims.icsi.mcptt",
    f"Content-Type: multipart/mixed;boundary={boundary}",
], body)
