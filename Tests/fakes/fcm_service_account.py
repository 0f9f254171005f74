"""Throwaway Google service-account JSON files for tests (RSA 2048, never used anywhere real).

    from fcm_service_account import make_service_account
    make_service_account("/tmp/sa.json", token_uri="https://127.0.0.1:8443/token", project_id="pushline-test")

Also a command: python3 fcm_service_account.py PATH TOKEN_URI [PROJECT_ID]
"""
import json
import os
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def make_service_account(path, token_uri, project_id="pushline-test", client_email=None, key_size=2048):
    """Writes a service-account JSON file with a fresh RSA key; returns the parsed dict."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=key_size)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    sa = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": os.urandom(20).hex(),
        "private_key": pem,
        "client_email": client_email or f"firebase-adminsdk@{project_id}.iam.gserviceaccount.com",
        "client_id": str(int.from_bytes(os.urandom(8), "big")),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "universe_domain": "googleapis.com",
    }
    with open(path, "w") as f:
        json.dump(sa, f, indent=2)
    os.chmod(path, 0o600)
    return sa


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: fcm_service_account.py PATH TOKEN_URI [PROJECT_ID]")
    make_service_account(sys.argv[1], sys.argv[2], *(sys.argv[3:4]))
