#!/usr/bin/env python3
"""A fake of the lotus miner and full node JSON-RPC calls the mesh makes, for tests/lotus.rs.

This is a fake because lotus cannot be installed on a test machine. It follows lotus's wire format
as lotus's source defines it (api/api_storage.go, api/api_full.go, go-jsonrpc, go-bitfield,
go-cid's JSON) but not its behaviour in full: see "Not covered" below.

Covered (one process serves both APIs, state kept in memory):
  POST /rpc/v0   the miner: ActorAddress, ActorSectorSize, AuthVerify, SectorNumReserveCount,
                 SectorNumReservations, SectorReceive
  POST /rpc/v1   the full node: ChainHead, StateGetRandomnessFromTickets,
                 StateGetRandomnessFromBeacon, AuthVerify
  GET  /debug/sectors   (no token; not a lotus endpoint) the received sectors and where their
                 pipeline stands, as JSON {"<number>": {...}}: see Lotus.sector_entry
Tokens are given with --token TOKEN=PERM,PERM...; a request without a token gets lotus's default
permission (read), an unknown token or a header that is not `Bearer T` gets HTTP 401, a method
that needs more than the token allows gets go-jsonrpc's "missing permission to invoke 'M' (need
'P')" error. The chain stands at --height; each height's tipset key is one dag-cbor CID, and
randomness is sha256 over (tag, epoch, entropy) for tickets and over ("beacon", tag, epoch,
entropy) for beacon randomness (seeds), drawn only at or below the head from the head's key.

SectorReceive (admin) takes a RemoteSectorMeta in State "PreCommitting" only and checks it as
lotus's storage/pipeline/receive.go does, with lotus's error texts: the actor, a sector number
not received before, Type equal to --seal-proof, a 32-byte ticket equal to the fake's own
StateGetRandomnessFromTickets(5, TicketEpoch, cbor(actor), head) and no more than 3780 epochs
old (lotus checks that age later, before PreCommit), CommD/CommR with lotus's CID prefixes, and
DataUnsealed, DataSealed, DataCache set. Each received sector then runs a pipeline in a thread:
  Receiving    GET DataUnsealed, DataSealed (200, application/octet-stream) and DataCache (200,
               application/x-tar, members and sizes limited as lotus's tarutil.ExtractTar does)
               with the location's Headers into --data-dir/<number>/{unsealed,sealed,cache/};
               a location with Local set is not fetched, as in lotus
  WaitSeed     seed = StateGetRandomnessFromBeacon(6, head height, cbor(actor), head)
  Committing   POST RemoteCommit1Endpoint with RemoteCommit1Params (200: the body is the Commit1
               output), then RemoteCommit2Endpoint with RemoteCommit2Params (200: the body is the
               proof). As in lotus, a failure of either (no connection, not 200) starts the step
               again from Commit1, after --retry-interval
  Proving      after POSTing RemoteSealingDoneParams {Successful: true, State: "Proving"} to
               RemoteSealingDoneEndpoint (when set)
  Failed       a download failing more than --retries times over, or the Committing step failing
               more than --retries times in all; RemoteSealingDoneEndpoint (when set) gets
               {Successful: false, State: "FailedUnrecoverable"} first
HTTP requests are made as Go's http.DefaultClient makes them: the location's Headers as given,
User-Agent Go-http-client/1.1, JSON bodies compact, Content-Type application/json.

Not covered: the chain moving (the seed is drawn at the head, at once), SectorReceive in any
State but PreCommitting, PreCommit1Out, Pieces and their deals (checkPieces), the PreCommit and
ProveCommit messages and their fees (CommitMessage is always null), computing Commit1/Commit2
locally (RemoteCommit1Endpoint and RemoteCommit2Endpoint must be set), verifying the proof (the
test does that with the ticket and seed from /debug/sectors), finalizing the sector, following
HTTP redirects, Accept-Encoding: gzip, every other method, websocket transport, JWT tokens
(tokens are opaque strings here), persistence across restarts.

Every call is appended as one JSON line {"api", "method", "params", "result" | "error"} to --log,
and every HTTP request the pipeline makes as {"api": "http", "method": "GET" | "POST", "url",
"status" (null when there was no answer), "headers" (the request's), "body" (a POST's JSON),
"error" (when there was no answer)}.

Usage: lotus.py --port P --log FILE [--actor f01000] [--sector-size 2048] [--height 10000]
                [--seal-proof 5] [--data-dir DIR] [--retries 120] [--retry-interval 0.5]
                [--token T=read,write,sign,admin]...
--data-dir defaults to lotus-sectors/ beside --log.
"""

import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PERMS = {
    # method: (api versions that serve it, permission)
    "ActorAddress": ({"v0"}, "read"),
    "ActorSectorSize": ({"v0"}, "read"),
    "SectorNumReserveCount": ({"v0"}, "admin"),
    "SectorNumReservations": ({"v0"}, "read"),
    "SectorReceive": ({"v0"}, "admin"),
    "ChainHead": ({"v1"}, "read"),
    "StateGetRandomnessFromTickets": ({"v1"}, "read"),
    "StateGetRandomnessFromBeacon": ({"v1"}, "read"),
    "AuthVerify": ({"v0", "v1"}, "read"),
}

NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
ID_ADDRESS = re.compile(r"^[ft]0(\d+)$")

# go-state-types crypto.DomainSeparationTag
TAG_SEAL_RANDOMNESS = 5  # the ticket
TAG_INTERACTIVE_SEAL_CHALLENGE_SEED = 6  # the seed

# go-state-types abi.RandomnessLength
RANDOMNESS_LENGTH = 32
# policy.SealRandomnessLookback (chain finality) and policy.MaxPreCommitRandomnessLookback
# (a day of epochs + finality): a ticket more than this far below the head has expired.
SEAL_RANDOMNESS_LOOKBACK = 900
MAX_TICKET_AGE = 2880 + SEAL_RANDOMNESS_LOOKBACK

# go-cid / go-multihash codes of lotus's commitment CIDs (receive.go's prefix checks)
FIL_COMMITMENT_UNSEALED = 0xF101
FIL_COMMITMENT_SEALED = 0xF102
SHA2_256_TRUNC254_PADDED = 0x1012
POSEIDON_BLS12_381_A1_FC1 = 0xB401

# lotus storage/sealer/tarutil/systar.go CacheFileConstraints: the only names a cache tar may
# hold, each with its largest size.
CACHE_FILE_CONSTRAINTS = {
    "p_aux": 64,
    "t_aux": 10240,
    "sc-02-data-tree-r-last.dat": 10_000_000,  # small sectors
    **{f"sc-02-data-tree-r-last-{i}.dat": 10_000_000 for i in range(16)},
    **{f"sc-02-data-layer-{i}.dat": 65 << 30 for i in range(1, 12)},  # 1x sector size + buffer
    **{f"sc-02-data-tree-c-{i}.dat": 5 << 30 for i in range(16)},  # ~4.6G
    "sc-02-data-tree-d.dat": 130 << 30,  # 2x sector size + buffer on 64G sectors
}

# The sector files lotus downloads, in its order (storiface.FTUnsealed, FTSealed, FTCache): the
# meta's field, the media type lotus's fetch turns into that file, the name under the sector's dir.
SECTOR_FILES = [
    ("DataUnsealed", "application/octet-stream", "unsealed"),
    ("DataSealed", "application/octet-stream", "sealed"),
    ("DataCache", "application/x-tar", "cache"),
]

# Go's http.DefaultClient has no timeout; the fake gives up on a silent peer after this long.
HTTP_TIMEOUT = 600
COPY_BUF = 1 << 20


def varint(n):
    """An unsigned varint (multiformats), which is also unsigned LEB128."""
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data, pos):
    """The unsigned varint at data[pos:] and the position after it."""
    n, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("varint runs past the end")
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return n, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def cid_string(raw):
    """A binary CID in go-cid's string form for CIDv1: multibase 'b', base32 lower, no padding."""
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def cid_prefix(text):
    """(version, codec, multihash code, digest length) of a CIDv1 string in base32 ('b').

    Only the base lotus and the mesh write is decoded; anything else is a ValueError, as a
    string go-cid cannot decode fails lotus's JSON decoding."""
    if not isinstance(text, str) or not text.startswith("b"):
        raise ValueError(f"the fake decodes only base32 ('b...') CIDs, not {text!r}")
    body = text[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except Exception as e:
        raise ValueError(f"invalid base32 in CID {text!r}: {e}") from None
    version, pos = read_varint(raw, 0)
    codec, pos = read_varint(raw, pos)
    mh_code, pos = read_varint(raw, pos)
    mh_len, pos = read_varint(raw, pos)
    if len(raw) - pos != mh_len:
        raise ValueError(f"CID {text!r}: multihash says {mh_len} digest bytes, has {len(raw) - pos}")
    return version, codec, mh_code, mh_len


def tipset_cid(height):
    """A CIDv1, dag-cbor (0x71), blake2b-256 (0xb220) of the height: one block per tipset."""
    digest = hashlib.blake2b(b"block-%d" % height, digest_size=32).digest()
    return cid_string(varint(1) + varint(0x71) + varint(0xB220) + varint(32) + digest)


def actor_id(address):
    match = ID_ADDRESS.match(address)
    if not match:
        raise ValueError(f"the fake needs an ID address for --actor (f0N), not {address!r}")
    return int(match.group(1))


def address_cbor(address):
    """go-address's MarshalCBOR of an ID address: a CBOR byte string (major type 2, length < 24)
    of the protocol byte 0 then the id in LEB128; f01000 -> 43 00 e8 07."""
    payload = b"\x00" + varint(actor_id(address))
    return bytes([0x40 | len(payload)]) + payload


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


def http_status(status, reason):
    """Go's resp.Status: "503 Service Unavailable"."""
    return f"{status} {reason}".strip()


class RpcError(Exception):
    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


def bad_meta(detail):
    """What go-jsonrpc answers when the meta does not decode into api.RemoteSectorMeta."""
    return RpcError(
        -32700, f"unmarshaling params for 'Filecoin.SectorReceive' (param: *api.RemoteSectorMeta): {detail}"
    )


class StepError(Exception):
    """A pipeline step failed (one try); the message is lotus's where lotus has one."""


class Lotus:
    def __init__(self, args):
        self.actor = args.actor
        self.actor_id = actor_id(args.actor)
        self.actor_cbor = address_cbor(args.actor)
        self.sector_size = args.sector_size
        self.height = args.height
        self.seal_proof = args.seal_proof
        self.retries = args.retries
        self.retry_interval = args.retry_interval
        self.data_dir = args.data_dir or os.path.join(os.path.dirname(os.path.abspath(args.log)), "lotus-sectors")
        self.tokens = {}
        for t in args.token:
            token, perms = t.split("=", 1)
            self.tokens[token] = perms.split(",")
        self.reservations = {}  # name -> [numbers]
        self.sectors = {}  # number -> the pipeline's record of the sector, see sector_entry
        self.lock = threading.Lock()  # guards reservations and sectors
        self.receive_lock = threading.Lock()  # one SectorReceive at a time, as lotus's inputLk
        self.log_lock = threading.Lock()
        self.log = open(args.log, "a", buffering=1)

    def record(self, entry):
        """Appends one JSON line to --log; calls and pipeline threads write concurrently."""
        line = json.dumps(entry) + "\n"
        with self.log_lock:
            self.log.write(line)

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

    def randomness(self, domain, tag, epoch, entropy, tsk):
        """Randomness drawn from the head's key: sha256(domain, tag, epoch, entropy), base64."""
        if tsk != self.head()["Cids"]:
            raise RpcError(1, f"loading tipset {tsk}: not found")
        if not isinstance(tag, int) or not isinstance(epoch, int):
            raise RpcError(1, "tag and epoch must be integers")
        if epoch > self.height:
            raise RpcError(1, f"cannot draw randomness from the future (epoch {epoch} > head {self.height})")
        raw = base64.b64decode(entropy or "")
        digest = hashlib.sha256(domain + tag.to_bytes(8, "big", signed=True) + epoch.to_bytes(8, "big", signed=True) + raw)
        return base64.b64encode(digest.digest()).decode()

    def StateGetRandomnessFromTickets(self, tag, epoch, entropy, tsk):
        return self.randomness(b"", tag, epoch, entropy, tsk)

    def StateGetRandomnessFromBeacon(self, tag, epoch, entropy, tsk):
        return self.randomness(b"beacon", tag, epoch, entropy, tsk)

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

    # ---- SectorReceive: lotus's checkSectorMeta for State PreCommitting ----

    def SectorReceive(self, meta):
        with self.receive_lock:
            number, record = self.check_sector_meta(meta)
            with self.lock:
                self.sectors[number] = record
        threading.Thread(target=self.pipeline, args=(number, meta), name=f"sector-{number}", daemon=True).start()
        return None

    def check_sector_meta(self, meta):
        """The sector's number and its first record, or the RpcError lotus would answer.

        The checks run in receive.go's order; the messages are lotus's own where it has one."""
        if not isinstance(meta, dict):
            raise bad_meta(f"json: cannot unmarshal {type(meta).__name__} into Go value of type api.RemoteSectorMeta")
        sector = meta.get("Sector")
        if not isinstance(sector, dict) or not all(
            isinstance(sector.get(k), int) and sector.get(k) >= 0 for k in ("Miner", "Number")
        ):
            raise bad_meta(f"Sector must be {{\"Miner\": uint64, \"Number\": uint64}}, not {sector!r}")
        number = sector["Number"]
        if not isinstance(meta.get("Type"), int):
            raise bad_meta(f"Type must be an integer (abi.RegisteredSealProof), not {meta.get('Type')!r}")

        if sector["Miner"] != self.actor_id:
            raise RpcError(
                1,
                f"sector for wrong actor - expected actor id {self.actor_id}, sector was for actor {sector['Miner']}",
            )
        with self.lock:
            if number in self.sectors:
                raise RpcError(1, f"sector with ID {number} already exists in the sealing pipeline")
        if meta["Type"] != self.seal_proof:
            raise RpcError(
                1, f"sector seal proof type doesn't match current seal proof type ({meta['Type']}!={self.seal_proof})"
            )
        head = self.head()

        if meta.get("State") != "PreCommitting":
            raise RpcError(1, "imported sector State in not supported")

        # the ticket: drawn by this chain for this actor at TicketEpoch, and not expired
        ticket_epoch = meta.get("TicketEpoch") or 0  # Go: null is 0
        if not isinstance(ticket_epoch, int):
            raise bad_meta(f"TicketEpoch must be an integer, not {ticket_epoch!r}")
        try:
            ticket = base64.b64decode(meta.get("TicketValue") or "", validate=True)
        except Exception as e:
            raise bad_meta(f"TicketValue is not standard base64: {e}") from None
        if len(ticket) != RANDOMNESS_LENGTH:
            raise RpcError(1, f"ticket randomness had wrong length {len(ticket)}")
        try:
            generated = base64.b64decode(
                self.StateGetRandomnessFromTickets(
                    TAG_SEAL_RANDOMNESS, ticket_epoch, base64.b64encode(self.actor_cbor).decode(), head["Cids"]
                )
            )
        except RpcError as e:
            raise RpcError(1, f"generating check ticket: {e.message}") from None
        if ticket != generated:
            raise RpcError(1, f"provided({ticket.hex()}) and generated({generated.hex()}) tickets differ")
        # lotus checks this in checkPrecommit, before sending the PreCommit (checks.go)
        if self.height - ticket_epoch > MAX_TICKET_AGE:
            raise RpcError(
                1, f"ticket expired: seal height: {ticket_epoch + SEAL_RANDOMNESS_LOOKBACK}, head: {self.height}"
            )

        # CommD / CommR: go-cid JSON {"/": "b..."} with lotus's prefixes
        if meta.get("CommD") is None or meta.get("CommR") is None:
            raise RpcError(
                1, "both CommR/CommD cids need to be set for sectors in PreCommitting and later states"
            )
        comms = {}
        for field, codec, mh_code in (
            ("CommD", FIL_COMMITMENT_UNSEALED, SHA2_256_TRUNC254_PADDED),
            ("CommR", FIL_COMMITMENT_SEALED, POSEIDON_BLS12_381_A1_FC1),
        ):
            value = meta[field]
            if not isinstance(value, dict) or not isinstance(value.get("/"), str):
                raise bad_meta(f'{field} must be a CID as {{"/": "..."}}, not {value!r}')
            try:
                prefix = cid_prefix(value["/"])
            except ValueError as e:
                raise bad_meta(f"{field}: {e}") from None
            if prefix != (1, codec, mh_code, 32):
                raise RpcError(1, f"{field} cid has wrong prefix")
            comms[field] = value["/"]

        for field in ("DataSealed", "DataCache"):
            if meta.get(field) is None:
                raise RpcError(1, f"expected {field} to be set")

        # the sealing service's hooks: the fake cannot run Commit1 / Commit2 itself
        for field, what in (("RemoteCommit1Endpoint", "c1"), ("RemoteCommit2Endpoint", "c2")):
            if not meta.get(field):
                raise RpcError(1, f"the fake cannot compute commit locally: {field} must be set")
            self.check_url(meta[field], f"parsing remote {what} endpoint url")
        if meta.get("RemoteSealingDoneEndpoint"):
            self.check_url(meta["RemoteSealingDoneEndpoint"], "parsing remote sealing-done endpoint url")

        if meta.get("DataUnsealed") is None:
            raise RpcError(1, "expected DataUnsealed to be set")
        for field, _, _ in SECTOR_FILES:
            self.check_location(field, meta[field])

        record = {
            "state": "Receiving",
            "error": None,
            "ticket": base64.b64encode(ticket).decode(),
            "ticket_epoch": ticket_epoch,
            "seed": None,
            "seed_epoch": None,
            "comm_d": comms["CommD"],
            "comm_r": comms["CommR"],
            "proof": None,
            "c1_out_len": None,
            "commit1_failures": 0,
            "commit1_last_status": None,
            "commit1_last_error": None,
            "commit2_failures": 0,
            "commit2_last_status": None,
            "commit2_last_error": None,
            "download_failures": 0,
            "download_last_error": None,
            "unsealed_bytes": None,
            "sealed_bytes": None,
            "cache_files": {},
            "done_status": None,
        }
        return number, record

    @staticmethod
    def check_url(url, context):
        if not isinstance(url, str):
            raise bad_meta(f"{context}: not a string: {url!r}")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RpcError(1, f"{context}: the fake calls only http(s)://host/... URLs, not {url!r}")

    @staticmethod
    def check_location(field, loc):
        """storiface.SectorLocation {Local, URL, Headers: [{Key, Value}]} decodes."""
        if not isinstance(loc, dict):
            raise bad_meta(f"{field} must be a storiface.SectorLocation object, not {loc!r}")
        if not isinstance(loc.get("Local", False), bool) or not isinstance(loc.get("URL", ""), str):
            raise bad_meta(f"{field}: Local must be a bool and URL a string")
        headers = loc.get("Headers") or []
        if not isinstance(headers, list) or not all(
            isinstance(h, dict) and isinstance(h.get("Key"), str) and isinstance(h.get("Value"), str) for h in headers
        ):
            raise bad_meta(f'{field}: Headers must be [{{"Key": "...", "Value": "..."}}], not {headers!r}')

    # ---- the pipeline behind SectorReceive: one thread per sector ----

    def update(self, number, **fields):
        with self.lock:
            self.sectors[number].update(fields)

    def bump(self, number, counter):
        with self.lock:
            self.sectors[number][counter] += 1

    def sector_entry(self, number):
        """GET /debug/sectors's entry: state ("Receiving", "WaitSeed", "Committing", "Proving",
        "Failed"), error (why Failed), ticket and seed (base64) with their epochs, comm_d and
        comm_r (CID strings), proof (base64, once Commit2 answered), c1_out_len, the failures of
        each step (count, last HTTP status, last error), unsealed_bytes, sealed_bytes,
        cache_files {name: size}, done_status (the sealing-done endpoint's answer)."""
        with self.lock:
            return json.loads(json.dumps(self.sectors[number]))

    def debug_sectors(self):
        with self.lock:
            numbers = sorted(self.sectors)
        return {str(n): self.sector_entry(n) for n in numbers}

    def pipeline(self, number, meta):
        """Receiving -> WaitSeed -> Committing -> Proving, or Failed with the reason."""
        done_url = meta.get("RemoteSealingDoneEndpoint") or None
        try:
            # Receiving: lotus's handleReceiveSector / DownloadSectorData, files in its order
            sector_dir = os.path.join(self.data_dir, str(number))
            os.makedirs(sector_dir, exist_ok=True)
            for field, media_type, name in SECTOR_FILES:
                loc = meta[field]
                if loc.get("Local"):
                    continue  # lotus only checks the data is in its storage; the fake has none
                self.retrying(
                    number,
                    f"downloading {field}",
                    lambda: self.download(number, loc, media_type, os.path.join(sector_dir, name), name),
                    lambda e: (self.bump(number, "download_failures"), self.update(number, download_last_error=str(e))),
                )

            # WaitSeed: the chain does not move, so the seed is drawn at the head at once
            self.update(number, state="WaitSeed")
            seed_epoch = self.height
            seed = self.StateGetRandomnessFromBeacon(
                TAG_INTERACTIVE_SEAL_CHALLENGE_SEED,
                seed_epoch,
                base64.b64encode(self.actor_cbor).decode(),
                self.head()["Cids"],
            )
            self.update(number, state="Committing", seed=seed, seed_epoch=seed_epoch)

            # Committing: lotus's handleCommitting with both remote endpoints; a failure of
            # either goes to RemoteCommitFailed, which cools down and starts again at Commit1.
            proof = self.retrying(number, "remote commit", lambda: self.commit(number, meta, seed), lambda e: None)
            self.update(number, proof=base64.b64encode(proof).decode())
        except Exception as e:
            if isinstance(e, StepError):
                error = str(e)
            else:  # a bug in the fake: still end the sector, so a test does not wait forever
                traceback.print_exc()
                error = f"the fake failed: {e!r}"
            if done_url:
                self.notify_done(number, done_url, False, "FailedUnrecoverable")
            self.update(number, state="Failed", error=error)
            return
        if done_url:
            self.notify_done(number, done_url, True, "Proving")
        self.update(number, state="Proving")

    def retrying(self, number, what, attempt, on_failure):
        """attempt(), tried again --retry-interval after each StepError, up to --retries times."""
        failures = 0
        while True:
            try:
                return attempt()
            except StepError as e:
                on_failure(e)
                failures += 1
                if failures > self.retries:
                    raise StepError(f"{what}: gave up after {failures} failures: {e}") from None
                time.sleep(self.retry_interval)

    def request(self, method, url, headers, body=None):
        """Opens one HTTP request as Go's http.DefaultClient would send it; logs it to --log.

        Returns (connection, response); the caller reads the body and closes the connection.
        No answer at all (refused, reset, timed out) is a StepError "do request: ..."."""
        parts = urllib.parse.urlsplit(url)
        sent = list(headers)
        if not any(k.lower() == "user-agent" for k, _ in sent):
            sent.append(("User-Agent", "Go-http-client/1.1"))
        data = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode()
            sent.append(("Content-Type", "application/json"))
        entry = {"api": "http", "method": method, "url": url, "status": None, "headers": {}}
        for k, v in sent:
            entry["headers"][k] = f"{entry['headers'][k]}, {v}" if k in entry["headers"] else v
        if body is not None:
            entry["body"] = body
        try:
            if parts.scheme == "https":
                conn = http.client.HTTPSConnection(parts.netloc, timeout=HTTP_TIMEOUT)
            elif parts.scheme == "http":
                conn = http.client.HTTPConnection(parts.netloc, timeout=HTTP_TIMEOUT)
            else:
                raise StepError(f'unsupported protocol scheme "{parts.scheme}"')
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.putrequest(method, path, skip_accept_encoding=True)
            for k, v in sent:
                conn.putheader(k, v)
            if data is not None:
                conn.putheader("Content-Length", str(len(data)))
            conn.endheaders(data)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException, StepError) as e:
            entry["error"] = str(e)
            self.record(entry)
            raise StepError(f"do request: {e}") from None
        entry["status"] = resp.status
        self.record(entry)
        return conn, resp

    def download(self, number, loc, media_type, dest, name):
        """lotus's paths.fetch: GET with the location's headers, 200 only, the body saved by its
        media type, into a temporary "fetching" path then moved to dest (FetchWithTemp)."""
        headers = [(h["Key"], h["Value"]) for h in loc.get("Headers") or []]
        temp = dest + ".fetching"
        for path in (temp, dest):  # what an earlier try left
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        conn, resp = self.request("GET", loc["URL"], headers)
        try:
            if resp.status != 200:
                raise StepError(f"non-200 code: {resp.status}")
            got = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if got not in ("application/octet-stream", "application/x-tar"):
                raise StepError(f"unknown content type: '{got}'")
            if got != media_type:
                # lotus would store a tar as a directory and octet-stream as a file whatever the
                # file is, and fail later; the fake says so at once
                raise StepError(f"{name}: expected content type {media_type}, got {got}")
            try:
                if got == "application/x-tar":
                    files = extract_tar(resp, temp)
                else:
                    with open(temp, "wb") as f:
                        size = copy(resp, f)
            except (OSError, http.client.HTTPException) as e:
                raise StepError(f"reading {name}: {e!r}") from None
        finally:
            conn.close()
        os.replace(temp, dest)
        if got == "application/x-tar":
            self.update(number, cache_files=files)
        else:
            self.update(number, **{f"{name}_bytes": size})

    def post(self, number, step, url, body):
        """One remote commit call as handleCommitting makes it: 200 and the raw body, else a
        StepError with lotus's text, counted in the sector's {step}_failures."""
        try:
            conn, resp = self.request("POST", url, [], body)
        except StepError as e:
            self.bump(number, f"{step}_failures")
            self.update(number, **{f"{step}_last_status": None, f"{step}_last_error": str(e)})
            raise StepError(f"requesting remote {step}: {e}") from None
        try:
            if resp.status != 200:
                error = f"remote {step} received non-200 http response {http_status(resp.status, resp.reason)}"
            else:
                try:
                    return resp.read()
                except (OSError, http.client.HTTPException) as e:
                    error = f"reading {step} response: {e!r}"
        finally:
            conn.close()
        self.bump(number, f"{step}_failures")
        self.update(number, **{f"{step}_last_status": resp.status, f"{step}_last_error": error})
        raise StepError(error)

    def commit(self, number, meta, seed):
        """Commit1 then Commit2 at the sealing service; returns the proof."""
        with self.lock:
            record = self.sectors[number]
            ticket, comm_d, comm_r = record["ticket"], record["comm_d"], record["comm_r"]
        c1_out = self.post(
            number,
            "commit1",
            meta["RemoteCommit1Endpoint"],
            {
                "Ticket": ticket,
                "Seed": seed,
                "Unsealed": {"/": comm_d},
                "Sealed": {"/": comm_r},
                "ProofType": meta["Type"],
            },
        )
        self.update(number, c1_out_len=len(c1_out))
        return self.post(
            number,
            "commit2",
            meta["RemoteCommit2Endpoint"],
            {
                "Sector": {"Miner": self.actor_id, "Number": number},
                "ProofType": meta["Type"],
                "Commit1Out": base64.b64encode(c1_out).decode(),
            },
        )

    def notify_done(self, number, url, successful, state):
        """maybeNotifyRemoteDone: one POST, its failure only noted (lotus only logs it)."""
        try:
            conn, resp = self.request(
                "POST", url, [], {"Successful": successful, "State": state, "CommitMessage": None}
            )
            try:
                resp.read()
            finally:
                conn.close()
            self.update(number, done_status=resp.status)
        except (StepError, OSError, http.client.HTTPException) as e:
            self.update(number, done_status=f"error: {e}")


def copy(src, dst, limit=None):
    """Copies src to dst (at most limit bytes); the number of bytes copied."""
    total = 0
    while limit is None or total < limit:
        chunk = src.read(COPY_BUF if limit is None else min(COPY_BUF, limit - total))
        if not chunk:
            break
        dst.write(chunk)
        total += len(chunk)
    return total


def extract_tar(stream, directory):
    """lotus's tarutil.ExtractTar, read as a stream: each member must be one of
    CACHE_FILE_CONSTRAINTS' names, no bigger than its bound. Returns {name: size}."""
    os.makedirs(directory)
    files = {}
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                bound = CACHE_FILE_CONSTRAINTS.get(member.name)
                if bound is None:
                    raise StepError(f"tar file {json.dumps(member.name)} isn't expected")
                if member.size > bound:
                    raise StepError(
                        f"tar file {json.dumps(member.name)} is bigger than expected: {member.size} > {bound}"
                    )
                if not member.isfile():
                    # lotus would write an empty file in its place; the fake refuses it
                    raise StepError(f"tar file {json.dumps(member.name)} is not a regular file")
                with open(os.path.join(directory, member.name), "wb") as out:
                    files[member.name] = copy(tar.extractfile(member), out, member.size)
    except tarfile.ReadError as e:
        if str(e) != "empty file":  # Go's tar reader takes an empty body as an empty archive
            raise StepError(f"reading tar: {e}") from None
    except tarfile.TarError as e:
        raise StepError(f"reading tar: {e}") from None
    return files


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

        def do_GET(self):
            if self.path != "/debug/sectors":
                self.send_error(404)
                return
            self.reply(200, lotus.debug_sectors())

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
            lotus.record(entry)
            self.reply(200, body)

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--actor", default="f01000")
    parser.add_argument("--sector-size", type=int, default=2048)
    parser.add_argument("--height", type=int, default=10000)
    parser.add_argument("--seal-proof", type=int, default=5, help="the seal proof SectorReceive accepts")
    parser.add_argument("--data-dir", help="where received sectors are downloaded (default: lotus-sectors/ beside --log)")
    parser.add_argument("--retries", type=int, default=120, help="retries of a failed download or remote commit")
    parser.add_argument("--retry-interval", type=float, default=0.5, help="seconds between retries")
    parser.add_argument("--token", action="append", default=[])
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(Lotus(args)))
    server.serve_forever()


if __name__ == "__main__":
    main()
