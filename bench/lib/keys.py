#!/usr/bin/env python3
"""Key material and credentials for bench/compare.sh.

Reads an RSA private key made by `openssl genrsa` and writes, next to it:

  jwks.json          the public key as a JWKS document (the gateway's `jwks_file`)
  pub.pem            the public key as PEM (HAProxy's `jwt_verify` key)
  token-hot.txt      one RS256 JWT (workloads a and d)
  tokens-many.txt    --many distinct RS256 JWTs, one per line, distinct `sub`s (workload b)
  apikey.txt         one Feldera API key, `apikey:` + 128 alphanumerics (workload c)
  apikey.sha256      base64 of SHA-256 of the full key string (the gateway's `sha256`)
  apikeys.map        HAProxy map: that hash -> the key's name

Tokens carry `kid`, `iss`, `aud` (a string), `sub`, `iat`, an `exp` ten years ahead and
`feldera_role = "write"` (activate needs the write role). Only `cryptography` is needed;
signing is plain RS256 (PKCS#1 v1.5 over SHA-256), so no JWT library is involved.
Existing outputs are kept, so reruns cost nothing; delete the directory to start over.
"""

import argparse
import base64
import hashlib
import json
import os
import secrets
import string
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

KID = "bench-rs256-1"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def uint_b64url(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def sign_jwt(key, claims: dict) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": KID}
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64url(signature)


def write(path: str, text: str) -> None:
    tmp = path + ".part"
    with open(tmp, "w", encoding="ascii") as out:
        out.write(text)
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", required=True, help="directory holding key.pem")
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--many", type=int, default=0, help="distinct tokens for workload b")
    args = parser.parse_args()

    with open(os.path.join(args.dir, "key.pem"), "rb") as pem:
        key = serialization.load_pem_private_key(pem.read(), password=None)
    public = key.public_key()
    numbers = public.public_numbers()

    def path(name: str) -> str:
        return os.path.join(args.dir, name)

    if not os.path.exists(path("jwks.json")):
        jwk = {"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256",
               "n": uint_b64url(numbers.n), "e": uint_b64url(numbers.e)}
        write(path("jwks.json"), json.dumps({"keys": [jwk]}, indent=2) + "\n")
    if not os.path.exists(path("pub.pem")):
        pem = public.public_bytes(serialization.Encoding.PEM,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
        write(path("pub.pem"), pem.decode("ascii"))

    now = int(time.time())
    base = {"iss": args.issuer, "aud": args.audience, "iat": now,
            "exp": now + 10 * 365 * 24 * 3600, "feldera_role": "write"}
    if not os.path.exists(path("token-hot.txt")):
        write(path("token-hot.txt"), sign_jwt(key, dict(base, sub="bench-hot")) + "\n")

    many = path("tokens-many.txt")
    have = 0
    if os.path.exists(many):
        with open(many, encoding="ascii") as f:
            have = sum(1 for line in f if line.strip())
    if args.many > 0 and have != args.many:
        started = time.monotonic()
        lines = [sign_jwt(key, dict(base, sub=f"bench-user-{i:06d}")) for i in range(args.many)]
        write(many, "\n".join(lines) + "\n")
        print(f"  signed {args.many} distinct tokens in {time.monotonic() - started:.1f}s",
              file=sys.stderr)

    if not os.path.exists(path("apikey.txt")):
        alphabet = string.ascii_letters + string.digits
        api_key = "apikey:" + "".join(secrets.choice(alphabet) for _ in range(128))
        digest = base64.b64encode(hashlib.sha256(api_key.encode("ascii")).digest()).decode()
        write(path("apikey.txt"), api_key + "\n")
        write(path("apikey.sha256"), digest + "\n")
        write(path("apikeys.map"), f"{digest} bench-key\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
