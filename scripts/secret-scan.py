#!/usr/bin/env python3
"""Scans every line ever added in the git history (all refs) for things shaped like secrets:
shardsign API keys, PEM private keys, age secret keys, cloud access keys, and 64-hex values
named like a secret (policy key, HMAC key, passphrase, seed). A finding whose fingerprint is in
.secret-scan-allow (test vectors, documented examples) is accepted; any other fails the scan.

Usage: scripts/secret-scan.py              scan; exit 1 on a finding
       scripts/secret-scan.py --list       print every finding with its fingerprint (to review
                                           one before allowlisting it)
       scripts/secret-scan.py --self-test  check that the patterns catch what they are for and
                                           pass what they are not (a transaction hash)

The fingerprint is SHA-256 of the matched text, so the allowlist itself holds no secret.
"""

import hashlib
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALLOW = ROOT / ".secret-scan-allow"

PATTERNS = {
    "shardsign API key": re.compile(r"ss_(?:live|test)_[0-9a-f]{16}_[0-9a-f]{64}"),
    "PEM private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    "age secret key": re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]{58}"),
    "cloud access key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "named 64-hex secret": re.compile(
        r"(?i)(?:secret|passphrase|hmac|seed|private|policy_key|signing_key)[\w\"' ]{0,24}"
        r"[:=]\s*[\"']?([0-9a-f]{64})\b"
    ),
}


def allowed() -> set[str]:
    if not ALLOW.exists():
        return set()
    entries = set()
    for line in ALLOW.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            entries.add(line)
    return entries


def history() -> list[tuple[str, str, str]]:
    """(commit, path, added line) for every line added anywhere in the history."""
    log = subprocess.run(
        ["git", "-C", str(ROOT), "log", "--all", "-p", "--no-color", "--no-ext-diff",
         "--format=commit %H", "--unified=0"],
        check=True, capture_output=True, text=True, errors="replace",
    ).stdout
    commit, path, out = "", "", []
    for line in log.splitlines():
        if line.startswith("commit "):
            commit = line[7:19]
        elif line.startswith("+++ "):
            path = line[6:] if line.startswith("+++ b/") else line[4:]
        elif line.startswith("+") and not line.startswith("+++"):
            out.append((commit, path, line[1:]))
    return out


def findings(lines):
    for commit, path, text in lines:
        for kind, pattern in PATTERNS.items():
            for match in pattern.finditer(text):
                secret = match.group(match.lastindex or 0)
                fingerprint = hashlib.sha256(secret.encode()).hexdigest()[:32]
                yield kind, commit, path, fingerprint


def self_test() -> int:
    # Built at run time so that this file holds no secret-shaped literal itself.
    hex64 = "ab" * 32
    must_find = {
        "shardsign API key": "ss_" + "live_" + "0123456789abcdef_" + hex64,
        "PEM private key": "-----BEGIN " + "EC PRIVATE KEY-----",
        "age secret key": "AGE-SECRET-" + "KEY-1" + "Q" * 58,
        "cloud access key": "AKIA" + "ABCDEFGHIJKLMNOP",
        "named 64-hex secret": "policy_key = \"" + hex64 + "\"",
    }
    must_pass = ["tx_hash: 0x" + hex64, "-----BEGIN CERTIFICATE-----", "session_id = " + hex64]
    failures = 0
    for kind, text in must_find.items():
        found = [k for k, *_ in findings([("c", "f", text)])]
        if kind not in found:
            print(f"self-test: {kind} not caught", file=sys.stderr)
            failures += 1
    for text in must_pass:
        if list(findings([("c", "f", text)])):
            print(f"self-test: false positive on {text[:20]}...", file=sys.stderr)
            failures += 1
    print("secret-scan self-test: " + ("ok" if not failures else f"{failures} failure(s)"))
    return 1 if failures else 0


def main() -> int:
    if "--self-test" in sys.argv[1:]:
        return self_test()
    listing = "--list" in sys.argv[1:]
    allow = allowed()
    seen, bad = set(), 0
    for kind, commit, path, fingerprint in findings(history()):
        if (fingerprint, path) in seen:
            continue
        seen.add((fingerprint, path))
        if listing:
            print(f"{fingerprint}  {kind}  {path} (commit {commit})")
        elif fingerprint not in allow:
            bad += 1
            print(f"secret-scan: {kind} in {path} (commit {commit}), fingerprint {fingerprint}",
                  file=sys.stderr)
    if listing:
        return 0
    if bad:
        print(f"secret-scan: {bad} finding(s). Remove the secret from the history (and rotate it), or,"
              " for a test vector, add its fingerprint to .secret-scan-allow with a comment.",
              file=sys.stderr)
        return 1
    print(f"secret-scan: no secret in the history ({len(seen)} allowlisted test vectors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
