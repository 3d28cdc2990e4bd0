#!/usr/bin/env python3
"""Prints the ratio table of BENCHMARKS.md from the last `cargo bench --bench seal_open`.

Reads criterion's estimates under target/criterion and divides each fieldseal
mean by the floor (bare AEAD seal with a fixed key) of the same algorithm and size.
"""
import json
import os
import sys

BASE = os.path.join(os.path.dirname(__file__), "..", "target", "criterion")


def mean(group, bench):
    path = os.path.join(BASE, group, bench, "new", "estimates.json")
    with open(path) as f:
        return json.load(f)["mean"]["point_estimate"]


def main():
    print("| algorithm | size | floor (bare seal) | seal | ratio | open | ratio "
          "| seal_row | ratio | open_row | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for alg, name in (("aes256gcm", "AES-256-GCM"), ("chacha20poly1305", "ChaCha20-Poly1305")):
        for size in (32, 256, 4096):
            try:
                floor = mean("floor", f"{alg}_seal_{size}")
                seal = mean(f"fieldseal_{alg}", f"seal_{size}")
                open_ = mean(f"fieldseal_{alg}", f"open_{size}")
                seal_row = mean(f"fieldseal_{alg}", f"seal_row_{size}")
                open_row = mean(f"fieldseal_{alg}", f"open_row_{size}")
            except FileNotFoundError as e:
                sys.exit(f"missing {e.filename}: run `cargo bench --bench seal_open` first")
            print(
                f"| {name} | {size} B | {floor:.0f} ns | {seal:.0f} ns | {seal / floor:.2f}x "
                f"| {open_:.0f} ns | {open_ / floor:.2f}x "
                f"| {seal_row:.0f} ns | {seal_row / floor:.2f}x "
                f"| {open_row:.0f} ns | {open_row / floor:.2f}x |"
            )


if __name__ == "__main__":
    main()
