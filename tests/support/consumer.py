"""An independent consumer of vigil's output, as a case system would write it.

Only standard tools and vigil's published documents: a JetStream pull consumer (nats-py), boto3
against the S3 store, `cryptography` for Ed25519, Trail of Bits' `rfc8785` for canonical JSON,
`jsonschema` with the schemas in tests/schemas. Nothing of vigil's code.

usage: consumer.py NATS_URL PUBLIC_KEY_FILE SCHEMA_DIR [NUMBERS_FILE]
Prints a JSON report {"checks": {name: count}, "failures": [..], "numbers": {...}} and exits 1 on
any failure.
"""

import asyncio
import base64
import hashlib
import json
import os
import struct
import sys
from collections import Counter, defaultdict
from datetime import datetime
from urllib.parse import urlparse

import boto3
import jsonschema
import nats
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

checks = Counter()
failures = []


def check(name, ok, detail=""):
    if ok:
        checks[name] += 1
    else:
        failures.append(f"{name}: {detail}")


def sha256(b):
    return hashlib.sha256(b).hexdigest()


def load_keys(path):
    """The public key file: lines `vigil-ed25519-public-key:<base64> [valid_from=T] [valid_until=T]`;
    key id = first 16 hex of SHA-256 of the 32 raw key bytes."""
    keys = {}
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        raw = base64.b64decode(parts[0].split(":", 1)[1])
        period = dict(p.split("=", 1) for p in parts[1:])
        keys[sha256(raw)[:16]] = (Ed25519PublicKey.from_public_bytes(raw), period)
    return keys


def verify_sig(keys, data, sig_bytes, what):
    sig = json.loads(sig_bytes)
    check("signature file is canonical", rfc8785.dumps(sig) == sig_bytes, what)
    k = keys.get(sig["key_id"])
    check("signature key is a published key", k is not None and sig["alg"] == "Ed25519", f"{what}: {sig['key_id']}")
    if k is None:
        return None
    try:
        k[0].verify(base64.b64decode(sig["signature"]), data)
        checks["Ed25519 signature verifies"] += 1
    except InvalidSignature:
        failures.append(f"Ed25519 signature verifies: {what}")
    return sig["key_id"]


class Store:
    def __init__(self):
        self.clients = {}

    def get(self, loc, store):
        u = urlparse(loc["url"])
        check("locator is a full s3:// URL", u.scheme == "s3" and u.netloc == store["bucket"], loc["url"])
        endpoint = store.get("endpoint")
        c = self.clients.get(endpoint)
        if c is None:
            c = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                             aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "test"),
                             aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "test"))
            self.clients[endpoint] = c
        key = u.path.lstrip("/")
        check("locator has a version id", bool(loc.get("version_id")), loc["url"])
        r = c.get_object(Bucket=u.netloc, Key=key, VersionId=loc["version_id"])
        body = r["Body"].read()
        # the version's Object Lock, as GET reports it
        ret = {"Mode": r.get("ObjectLockMode"), "RetainUntilDate": r.get("ObjectLockRetainUntilDate")}
        return body, r, ret


def parse_time(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


async def read_stream(url):
    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info("VIGIL")
    sub = await js.pull_subscribe("vigil.>", durable="case-system", stream="VIGIL")
    msgs = []
    while len(msgs) < info.state.messages:
        try:
            batch = await sub.fetch(100, timeout=5)
        except nats.errors.TimeoutError:
            break
        for m in batch:
            msgs.append((m.subject, m.headers or {}, m.data))
            await m.ack()
    await nc.close()
    return msgs


def main():
    nats_url, key_file, schema_dir = sys.argv[1:4]
    numbers_file = sys.argv[4] if len(sys.argv) > 4 else None
    keys = load_keys(key_file)
    schemas = {}
    for f in os.listdir(schema_dir):
        s = json.load(open(os.path.join(schema_dir, f), encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(s)
        schemas[s["title"]] = jsonschema.Draft202012Validator(s)

    def valid(name, doc, what):
        errs = sorted(schemas[name].iter_errors(doc), key=lambda e: list(e.path))
        check(f"valid against {name}", not errs, f"{what}: {[e.message for e in errs[:3]]}")

    store = Store()
    msgs = asyncio.run(read_stream(nats_url))
    check("stream has messages", len(msgs) > 0, "no message on VIGIL")
    chains = defaultdict(dict)  # (site, camera) -> seq -> (manifest sha256, prev_hash, manifest)
    ids = Counter()
    cps = []
    for subject, headers, data in msgs:
        doc = json.loads(data)
        if subject.startswith("vigil.evidence."):
            ev = doc
            what = f"event {ev['evidence_id']}"
            ids[ev["evidence_id"]] += 1
            valid("vigil.evidence.v1", ev, what)
            check("Nats-Msg-Id is the evidence id", headers.get("Nats-Msg-Id") == ev["evidence_id"], what)
            st = ev["store"]
            # every artifact: fetched by its full locator and version, hash, size, Content-Type
            for name, a in ev["artifacts"].items():
                loc = ev["objects"][a["key"]]
                body, r, ret = store.get(loc, st)
                check("artifact SHA-256 and size", sha256(body) == a["sha256"] and len(body) == a["bytes"], f"{what} {name}")
                check("artifact Content-Type as in the event", r["ContentType"] == a["content_type"], f"{what} {name}: {r['ContentType']}")
                check("Content-Disposition names the file", a["key"].rsplit("/", 1)[1] in r.get("ContentDisposition", ""), f"{what} {name}")
                check("Object Lock COMPLIANCE until the retention date",
                      ret["Mode"] == "COMPLIANCE" and ret["RetainUntilDate"] is not None
                      and ret["RetainUntilDate"] >= parse_time(ev["retention"]["retain_until_utc"]),
                      f"{what} {name}: {ret}")
            m = ev["manifest"]
            mbytes, _, _ = store.get(ev["objects"][m["key"]], st)
            sbytes, _, _ = store.get(ev["objects"][m["signature_key"]], st)
            manifest = json.loads(mbytes)
            valid("vigil.manifest.v4", manifest, what)
            check("manifest is RFC 8785 canonical (rfc8785.dumps)", rfc8785.dumps(manifest) == mbytes, what)
            check("manifest SHA-256 as in the event", sha256(mbytes) == m["sha256"], what)
            kid = verify_sig(keys, mbytes, sbytes, what)
            check("manifest names its signing key", kid == manifest["signing"]["key_id"], what)
            body = {k: v for k, v in ev.items() if k not in ("manifest", "store", "objects", "schema")}
            check("event carries the manifest's facts", body == {k: v for k, v in manifest.items() if k != "schema"}, what)
            site, cam, seq = manifest["site"], manifest["camera"], manifest["chain"]["seq"]
            chains[(site, cam)][seq] = (m["sha256"], manifest["chain"]["prev_hash"], manifest)
            # the chain index entry: signed, names this manifest
            ikey = f"chain/{site}/{cam}/seq/{seq:012d}.json"
            ibytes, _, _ = store.get(ev["objects"][ikey], st)
            isig, _, _ = store.get(ev["objects"][ikey + ".sig"], st)
            entry = json.loads(ibytes)
            valid("vigil.chain-index.v1", entry, ikey)
            check("index entry is canonical", rfc8785.dumps(entry) == ibytes, ikey)
            verify_sig(keys, ibytes, isig, ikey)
            check("index entry names the manifest", entry["manifest_sha256"] == m["sha256"] and entry["evidence_id"] == ev["evidence_id"], ikey)
            valid("vigil.signature.v1", json.loads(sbytes), what)
        elif subject.startswith("vigil.chain."):
            valid("vigil.checkpoint-event.v1", doc, subject)
            cp = doc["checkpoint"]
            canon = rfc8785.dumps(cp)
            check("checkpoint SHA-256 of rfc8785.dumps(checkpoint)", sha256(canon) == doc["sha256"], subject)
            sig = rfc8785.dumps(doc["signature"])
            verify_sig(keys, canon, sig, subject)
            stored, _, _ = store.get(doc["objects"][doc["key"]], doc["store"])
            stored_sig, _, _ = store.get(doc["objects"][doc["signature_key"]], doc["store"])
            check("stored checkpoint = published one", stored == canon and stored_sig == sig, subject)
            valid("vigil.checkpoint.v1", json.loads(stored), subject)
            cps.append(cp)
    check("no evidence id twice on the stream", all(n == 1 for n in ids.values()), str([i for i, n in ids.items() if n > 1]))
    # chains: seq 1..n, each prev_hash the SHA-256 of the manifest before
    for (site, cam), items in chains.items():
        seqs = sorted(items)
        check("chain positions 1..n without a gap", seqs == list(range(1, len(seqs) + 1)), f"{site}/{cam}: {seqs}")
        for s in seqs:
            want = "0" * 64 if s == 1 else items.get(s - 1, (None,))[0]
            check("chain link prev_hash = SHA-256 of the manifest before", items[s][1] == want, f"{site}/{cam} seq {s}")
        last = [c for c in cps if (c["site"], c["camera"]) == (site, cam)]
        check("a checkpoint was published for the chain", bool(last), f"{site}/{cam}")
        if last:
            newest = max(last, key=lambda c: c["last_seq"])
            check("newest checkpoint = chain head", newest["last_seq"] == seqs[-1] and newest["last_hash"] == items[seqs[-1]][0], f"{site}/{cam}")
    report = {"checks": dict(sorted(checks.items())), "failures": failures,
              "events": sum(ids.values()), "cameras": len(chains), "checkpoints": len(cps)}
    if numbers_file:
        compared = mismatches = 0
        examples = []
        for line in open(numbers_file, encoding="ascii"):
            bits, want = line.split()
            x = struct.unpack(">d", bytes.fromhex(bits))[0]
            got = rfc8785.dumps(x).decode()
            compared += 1
            if got != want:
                mismatches += 1
                if len(examples) < 5:
                    examples.append([bits, want, got])
        report["numbers"] = {"compared": compared, "mismatches": mismatches, "examples": examples}
        if mismatches:
            failures.append(f"number formatting: {mismatches} of {compared} differ from rfc8785")
    print(json.dumps(report, indent=1))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
