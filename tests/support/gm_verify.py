"""Checks vigil's 国密 signatures and digests with gmssl (PyPI), an SM2/SM3 implementation no one
on this project wrote, as a case system would: the SM2 public key from its PEM file, the DER
signature from the signature file's "sm2" member, the signed bytes as stored.

stdin: a JSON list of jobs, each
  {"name": …, "doc": path, "sig": path to the vigil .sig file, "pub": path to the SM2 public key PEM}
  {"name": …, "file": path, "sm3": hex}
stdout: a JSON object {name: true/false}.
"""
import base64
import json
import sys

from gmssl import sm2, sm3, func


def public_xy(pem_path):
    lines = [l for l in open(pem_path).read().splitlines() if l and not l.startswith("-----")]
    der = base64.b64decode("".join(lines))
    point = der[-65:]  # SubjectPublicKeyInfo ends with the BIT STRING 04 || x || y
    assert point[0] == 4, "uncompressed point"
    return point[1:].hex()


def verify(doc, sig, pub):
    s = json.load(open(sig))["sm2"]
    assert s["alg"] == "SM2-with-SM3" and s["distid"] == "1234567812345678", s
    c = sm2.CryptSM2(private_key=None, public_key="00", asn1=True)
    # set after construction: gmssl's constructor strips leading "0"/"4" characters of the key
    c.public_key = public_xy(pub)
    return bool(c.verify_with_sm3(base64.b64decode(s["signature"]).hex(), open(doc, "rb").read()))


def main():
    out = {}
    for job in json.load(sys.stdin):
        if "file" in job:
            data = open(job["file"], "rb").read()
            out[job["name"]] = sm3.sm3_hash(func.bytes_to_list(data)) == job["sm3"]
        else:
            out[job["name"]] = verify(job["doc"], job["sig"], job["pub"])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
