#!/usr/bin/env python3
"""A fake of the few Compute Engine API v1 calls the mesh autoscaler's GCP provider makes, and of
the GCE metadata server's token endpoint, for tests/autoscaler_gcp.rs.

This is a fake because no real GCP API can run on a test machine. It follows the documented
request and response shapes but is not Google's behaviour in full: see "Not covered" below.

Covered (zonal and regional managed instance groups, state kept in memory):
  GET  /computeMetadata/v1/instance/service-accounts/default/token   (needs Metadata-Flavor: Google)
  GET  /compute/v1/projects/P/{zones/Z|regions/R}/instanceGroupManagers/G
  POST .../instanceGroupManagers/G/listManagedInstances[?pageToken=T]   (pages of --page-size)
  POST .../instanceGroupManagers/G/resize?size=N
  POST .../instanceGroupManagers/G/deleteInstances   {"instances": [...], "skipInstancesOnValidationError": b}
Every compute call needs `Authorization: Bearer T` with a token this fake issued and that has not
expired (401 otherwise); unknown groups answer 404; errors use Google's {"error": {...}} shape.
Instances appear at once as currentAction NONE / instanceStatus RUNNING, named <group>-xxxx; a
regional group spreads them over <region>-a and <region>-b.

Not covered: operations that take time (CREATING, DELETING states), Operation polling, quotas,
IAM (403), instance templates, autoscaler policies, any other API call.

Every request is appended as one JSON line {"method", "path", "query", "body"} to --log.

Usage: gce_api.py --port P --log FILE [--zonal P/Z/G]... [--regional P/R/G]...
                  [--token-lifetime SECONDS] [--page-size N]
"""

import argparse
import json
import random
import string
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
API_PREFIX = "/compute/v1/"
SELF_LINK_BASE = "https://www.googleapis.com/compute/v1/"


class Group:
    def __init__(self, project, scope, location, name):
        self.project = project
        self.scope = scope  # "zones" or "regions"
        self.location = location
        self.name = name
        self.target_size = 0
        self.instances = []  # [{"name", "zone"}], in creation order

    def path(self):
        return f"projects/{self.project}/{self.scope}/{self.location}/instanceGroupManagers/{self.name}"

    def zones(self):
        if self.scope == "zones":
            return [self.location]
        return [f"{self.location}-a", f"{self.location}-b"]

    def instance_url(self, instance):
        return f"{SELF_LINK_BASE}projects/{self.project}/zones/{instance['zone']}/instances/{instance['name']}"

    def resource(self):
        key = "zone" if self.scope == "zones" else "region"
        return {
            "kind": "compute#instanceGroupManager",
            "name": self.name,
            key: f"{SELF_LINK_BASE}projects/{self.project}/{self.scope}/{self.location}",
            "baseInstanceName": self.name,
            "targetSize": self.target_size,
            "selfLink": SELF_LINK_BASE + self.path(),
        }


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.groups = {}
        for spec, scope in [(s, "zones") for s in args.zonal] + [(s, "regions") for s in args.regional]:
            project, location, name = spec.split("/")
            group = Group(project, scope, location, name)
            self.groups[group.path()] = group
        self.tokens = {}  # token -> expiry (time.monotonic())
        self.token_lifetime = args.token_lifetime
        self.page_size = args.page_size
        self.operations = 0

    def issue_token(self):
        token = f"fake-token-{len(self.tokens) + 1}-{random_suffix(8)}"
        self.tokens[token] = time.monotonic() + self.token_lifetime
        return token

    def token_ok(self, header):
        if not header or not header.startswith("Bearer "):
            return False
        expiry = self.tokens.get(header[len("Bearer "):])
        return expiry is not None and time.monotonic() < expiry

    def create_instance(self, group):
        zones = group.zones()
        zone = zones[len(group.instances) % len(zones)]
        taken = {i["name"] for i in group.instances}
        while True:
            name = f"{group.name}-{random_suffix(4)}"
            if name not in taken:
                break
        group.instances.append({"name": name, "zone": zone})

    def operation(self, group, kind):
        self.operations += 1
        return {
            "kind": "compute#operation",
            "name": f"operation-{self.operations}",
            "operationType": kind,
            "targetLink": SELF_LINK_BASE + group.path(),
            "status": "RUNNING",
        }


def random_suffix(n):
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def google_error(code, message, reason):
    return {"error": {"code": code, "message": message, "errors": [{"message": message, "domain": "global", "reason": reason}]}}


class Handler(BaseHTTPRequestHandler):
    state = None
    log_path = None

    def log_message(self, fmt, *args):  # to stderr, which the test keeps in a log file
        sys.stderr.write("%s %s\n" % (self.log_date_time_string(), fmt % args))

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def record(self, path, query, body):
        line = json.dumps({"method": self.command, "path": path, "query": query, "body": body})
        with open(self.log_path, "a") as log:
            log.write(line + "\n")

    def do_GET(self):
        self.handle_any()

    def do_POST(self):
        self.handle_any()

    def handle_any(self):
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self.record(url.path, query, raw.decode(errors="replace"))
            return self.reply(400, google_error(400, "Invalid JSON payload received.", "badRequest"))
        self.record(url.path, query, body)
        with self.state.lock:
            code, reply = self.route(url.path, query, body)
        self.reply(code, reply)

    def route(self, path, query, body):
        state = self.state
        if path == TOKEN_PATH:
            if self.command != "GET" or self.headers.get("Metadata-Flavor") != "Google":
                return 403, {"error": "Missing Metadata-Flavor:Google header."}
            return 200, {"access_token": state.issue_token(), "expires_in": state.token_lifetime, "token_type": "Bearer"}

        if not path.startswith(API_PREFIX):
            return 404, google_error(404, f"Not found: {path}", "notFound")
        if not state.token_ok(self.headers.get("Authorization")):
            return 401, google_error(
                401,
                "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.",
                "authError",
            )

        parts = path[len(API_PREFIX):].split("/")
        # projects/P/{zones|regions}/L/instanceGroupManagers/G[/action]
        if len(parts) not in (6, 7) or parts[0] != "projects" or parts[2] not in ("zones", "regions") or parts[4] != "instanceGroupManagers":
            return 404, google_error(404, f"Not found: {path}", "notFound")
        group_path = "/".join(parts[:6])
        group = state.groups.get(group_path)
        if group is None:
            return 404, google_error(404, f"The resource '{group_path}' was not found", "notFound")
        action = parts[6] if len(parts) == 7 else None

        if action is None and self.command == "GET":
            return 200, group.resource()
        if self.command != "POST":
            return 405, google_error(405, f"Method {self.command} not allowed", "methodNotAllowed")
        if action == "listManagedInstances":
            start = int(query.get("pageToken", "0"))
            page = group.instances[start:start + state.page_size]
            reply = {
                "managedInstances": [
                    {
                        "instance": group.instance_url(i),
                        "id": str(abs(hash(i["name"]))),
                        "instanceStatus": "RUNNING",
                        "currentAction": "NONE",
                    }
                    for i in page
                ]
            }
            if start + state.page_size < len(group.instances):
                reply["nextPageToken"] = str(start + state.page_size)
            return 200, reply
        if action == "resize":
            try:
                size = int(query["size"])
            except (KeyError, ValueError):
                return 400, google_error(400, "Invalid value for field 'size'", "invalid")
            if size < 0:
                return 400, google_error(400, "Invalid value for field 'size': must be >= 0", "invalid")
            group.target_size = size
            while len(group.instances) < size:
                state.create_instance(group)
            del group.instances[size:]
            return 200, state.operation(group, "compute.instanceGroupManagers.resize")
        if action == "deleteInstances":
            urls = (body or {}).get("instances") or []
            skip = bool((body or {}).get("skipInstancesOnValidationError"))
            chosen = []
            for url in urls:
                found = [i for i in group.instances if url.endswith(f"zones/{i['zone']}/instances/{i['name']}")]
                if not found and not skip:
                    return 400, google_error(400, f"Instance '{url}' is not a member of '{group.name}'", "invalid")
                chosen.extend(found)
            for instance in chosen:
                group.instances.remove(instance)
            group.target_size -= len(chosen)
            return 200, state.operation(group, "compute.instanceGroupManagers.deleteInstances")
        return 400, google_error(400, f"Unknown action {action}", "badRequest")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", required=True, help="request log, one JSON object a line")
    parser.add_argument("--zonal", action="append", default=[], metavar="PROJECT/ZONE/GROUP")
    parser.add_argument("--regional", action="append", default=[], metavar="PROJECT/REGION/GROUP")
    parser.add_argument("--token-lifetime", type=int, default=3600)
    parser.add_argument("--page-size", type=int, default=500)
    args = parser.parse_args()
    Handler.state = State(args)
    Handler.log_path = args.log
    open(args.log, "w").close()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"fake gce api on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
