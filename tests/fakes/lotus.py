#!/usr/bin/env python3
"""A fake of the lotus miner and full node JSON-RPC calls the mesh makes, for tests/lotus.rs.

This is a fake because lotus cannot be installed on a test machine. It follows lotus's wire format
as lotus's source defines it (api/api_storage.go, api/api_full.go, go-jsonrpc, go-bitfield,
go-cid's JSON) but not its behaviour in full: see "Not covered" below.

Covered (one process serves both APIs, state kept in memory):
  POST /rpc/v0   the miner: ActorAddress, ActorSectorSize, AuthVerify, SectorNumReserveCount,
                 SectorNumReservations
  POST /rpc/v1   the full node: ChainHead, StateGetRandomnessFromTickets, AuthVerify
Tokens are given with --token TOKEN=PERM,PERM...; a request without a token gets lotus's default
permission (read), an unknown token or a header that is not `Bearer T` gets HTTP 401, a method
that needs more than the token allows gets go-jsonrpc's "missing permission to invoke 'M' (need
'P')" error. The chain stands at --height; each height's tipset key is one dag-cbor CID, and
randomness is sha256 over (tag, epoch, entropy), drawn only at or below the head from the head's
key.

Not covered: the chain moving, SectorReceive and the sealing pipeline behind it, every other
method, websocket transport, JWT tokens (tokens are opaque strings here).

Every call is appended as one JSON line {"api", "method", "params", "result" | "error"} to --log.

Usage: lotus.py --port P --log FILE [--actor f01000] [--sector-size 2048] [--height 10000]
                [--token T=read,write,sign,admin]...
"""

import argparse
import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PERMS = {
    # method: (api versions that serve it, permission)
    "ActorAddress": ({"v0"}, "read"),
    "ActorSectorSize": ({"v0"}, "read"),
    "SectorNumReserveCount": ({"v0"}, "admin"),
    "SectorNumReservations": ({"v0"}, "read"),
    "ChainHead": ({"v1"}, "read"),
    "StateGetRandomnessFromTickets": ({"v1"}, "read"),
    "AuthVerify": ({"v0", "v1"}, "read"),
}

NAME = re.compile(r"^[a-zA-Z0-9_-]+$")


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tipset_cid(height):
    """A CIDv1, dag-cbor (0x71), blake2b-256 (0xb220) of the height: one block per tipset."""
    digest = hashlib.blake2b(b"block-%d" % height, digest_size=32).digest()
    raw = varint(1) + varint(0x71) + varint(0xB220) + varint(32) + digest
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def bitfield_runs(bits):
    """go-bitfield's JSON: run lengths starting with a run of zeroes."""
    runs, nxt = [], 0
    for b in sorted(set(bits)):
        if runs and b == nxt:
            runs[-1] += 1
        else:
            runs += [b - nxt, 1]
        nxt = b + 1
    return runs or [0]


class RpcError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Lotus:
    def __init__(self, args):
        self.actor = args.actor
        self.sector_size = args.sector_size
        self.height = args.height
        self.tokens = {}
        for t in args.token:
            token, perms = t.split("=", 1)
            self.tokens[token] = perms.split(",")
        self.reservations = {}  # name -> [numbers]
        self.lock = threading.Lock()
        self.log = open(args.log, "a", buffering=1)

    def head(self):
        return {"Cids": [{"/": tipset_cid(self.height)}], "Blocks": [], "Height": self.height}

    def call(self, version, perms, method, params):
        name = method.removeprefix("Filecoin.")
        if name not in PERMS or version not in PERMS[name][0]:
            raise RpcError(-32601, f"method '{method}' not found")
        need = PERMS[name][1]
        if need not in perms:
            raise RpcError(1, f"missing permission to invoke '{name}' (need '{need}')")
        return getattr(self, name)(*params)

    def ActorAddress(self):
        return self.actor

    def ActorSectorSize(self, addr):
        if addr != self.actor:
            raise RpcError(1, f"actor {addr} not found")
        return self.sector_size

    def AuthVerify(self, token):
        if token not in self.tokens:
            raise RpcError(1, "JWT Verification failed: signature is invalid")
        return self.tokens[token]

    def ChainHead(self):
        return self.head()

    def StateGetRandomnessFromTickets(self, tag, epoch, entropy, tsk):
        if tsk != self.head()["Cids"]:
            raise RpcError(1, f"loading tipset {tsk}: not found")
        if not isinstance(tag, int) or not isinstance(epoch, int):
            raise RpcError(1, "tag and epoch must be integers")
        if epoch > self.height:
            raise RpcError(1, f"cannot draw randomness from the future (epoch {epoch} > head {self.height})")
        raw = base64.b64decode(entropy or "")
        digest = hashlib.sha256(tag.to_bytes(8, "big", signed=True) + epoch.to_bytes(8, "big", signed=True) + raw)
        return base64.b64encode(digest.digest()).decode()

    def SectorNumReserveCount(self, name, count):
        if not NAME.match(name):
            raise RpcError(1, f"reservation name '{name}' has characters outside a-z, A-Z, 0-9, _, -")
        with self.lock:
            if name in self.reservations:
                raise RpcError(1, f"reservation with name '{name}' already exists")
            used = {n for ns in self.reservations.values() for n in ns}
            numbers, n = [], 0
            while len(numbers) < count:
                if n not in used:
                    numbers.append(n)
                n += 1
            self.reservations[name] = numbers
        return bitfield_runs(numbers)

    def SectorNumReservations(self):
        with self.lock:
            return {k: bitfield_runs(v) for k, v in self.reservations.items()}


def handler(lotus):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            version = self.path.removeprefix("/rpc/")
            if version not in ("v0", "v1"):
                self.send_error(404)
                return
            header = self.headers.get("Authorization")
            if header is None:
                perms = ["read"]
            elif header.startswith("Bearer ") and header[7:] in lotus.tokens:
                perms = lotus.tokens[header[7:]]
            else:
                self.send_error(401, "JWT Verification failed")
                return
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            entry = {"api": version, "method": request.get("method"), "params": request.get("params")}
            try:
                result = lotus.call(version, perms, request["method"], request.get("params") or [])
                entry["result"] = result
                body = {"jsonrpc": "2.0", "id": request.get("id"), "result": result}
            except RpcError as e:
                entry["error"] = e.message
                body = {"jsonrpc": "2.0", "id": request.get("id"), "error": {"code": e.code, "message": e.message}}
            except TypeError as e:
                entry["error"] = str(e)
                body = {"jsonrpc": "2.0", "id": request.get("id"), "error": {"code": -32602, "message": f"wrong parameters: {e}"}}
            lotus.log.write(json.dumps(entry) + "\n")
            self.reply(200, body)

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--actor", default="f01000")
    parser.add_argument("--sector-size", type=int, default=2048)
    parser.add_argument("--height", type=int, default=10000)
    parser.add_argument("--token", action="append", default=[])
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(Lotus(args)))
    server.serve_forever()


if __name__ == "__main__":
    main()
