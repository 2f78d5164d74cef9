"""A real local cluster for the client tests: `shardsign dev up --demo` from the built binaries
(`SHARDSIGN_BIN_DIR`, default target/debug) in a temporary directory, on free ports; stopped at
the end. The demo gives a key `demo` with a signed policy and an agent API key (Sepolia, 0.1 ETH
per transaction, one allowed recipient, messages allowed)."""

import json
import os
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEMO_RECIPIENT = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def _free_base_port():
    """A port P with P..P+3 free right now (the cluster binds them immediately after)."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base > 65000:
            continue
        sockets = []
        try:
            for offset in range(4):
                s = socket.socket()
                s.bind(("127.0.0.1", base + offset))
                sockets.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no four consecutive free ports")


class DevCluster:
    def __init__(self):
        self.bin_dir = Path(os.environ.get("SHARDSIGN_BIN_DIR", ROOT / "target" / "debug"))
        self.tmp = tempfile.TemporaryDirectory(prefix="shardsign-pytest-")
        self.dir = Path(self.tmp.name) / "cluster"
        self.port = _free_base_port()

    def cli(self, *args, api_key=None):
        env = dict(os.environ)
        env.pop("SHARDSIGN_API_KEY", None)
        if api_key:
            env["SHARDSIGN_API_KEY"] = api_key
        result = subprocess.run(
            [str(self.bin_dir / "shardsign"), "--dir", str(self.dir), "--json", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"shardsign {args[:2]} failed: {result.stdout}{result.stderr}")
        return json.loads(result.stdout.strip().splitlines()[-1])

    def start(self):
        self.cli("dev", "up", "--demo", "--port", str(self.port))
        self.endpoint = f"127.0.0.1:{self.port}"
        self.ca = str(self.dir / "certs" / "ca.pem")
        self.agent_key = (self.dir / "secrets" / "agent.key").read_text().strip()
        self.admin_key = (self.dir / "secrets" / "admin.key").read_text().strip()

    def stop(self):
        try:
            self.cli("dev", "down")
        finally:
            self.tmp.cleanup()


@pytest.fixture(scope="session")
def cluster():
    dev = DevCluster()
    dev.start()
    yield dev
    dev.stop()
