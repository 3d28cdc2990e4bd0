#!/usr/bin/env python3
"""Writes fuzz/corpus/<target>/seed-* from tests/vectors/v1.json.

The committed seed corpus is the published test vectors: every valid and
invalid sealed value, in binary and text form. Run from anywhere; rewrites
the seed files only.
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "tests", "vectors", "v1.json")


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"seed-{name}"), "wb") as f:
        f.write(data)


def main():
    with open(VECTORS) as f:
        v = json.load(f)
    for entry in v["valid"] + v["invalid"]:
        n = entry["id"]
        if "sealed" in entry:
            raw = bytes.fromhex(entry["sealed"])
            for target in ("parse_binary", "open_arbitrary", "sqlx_decode"):
                write(target, f"{n:03}", raw)
            # open_arbitrary also prefixes a header: seed it with the body alone.
            write("open_arbitrary", f"{n:03}-body", raw[6:])
        if "sealed_text" in entry:
            text = entry["sealed_text"].encode()
            for target in ("parse_text", "sqlx_decode"):
                write(target, f"{n:03}-text", text)
    for entry in v["valid"]:
        n = entry["id"]
        pt = bytes.fromhex(entry["plaintext"])
        ctx = entry["context"]
        # Structured targets read raw bytes through `arbitrary`: the plaintext
        # and context of a vector make a realistic starting point.
        structured = pt + json.dumps(ctx).encode()
        for target in ("round_trip", "context_injective", "config", "store_records"):
            write(target, f"{n:03}", structured)


if __name__ == "__main__":
    main()
