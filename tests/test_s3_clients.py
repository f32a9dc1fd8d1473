"""The S3 clients people use, unmodified and with their defaults: aws-cli, rclone, s3cmd, the minio SDK."""
from __future__ import annotations

import hashlib
import io
import math
import os
import random
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.stack import BIN, MiB, random_bytes

TREE_FILES = 300


def make_tree(root: Path, seed: int) -> dict[str, str]:
    """A few hundred files in nested directories (names with spaces and unicode), one over the
    multipart threshold; relative path -> SHA-256."""
    rnd = random.Random(seed)
    out = {}
    for i in range(TREE_FILES):
        rel = Path(f"d{i % 7}") / f"sub {i % 4}" / (f"fïle {i}.bin" if i % 10 == 0 else f"f{i}.txt")
        size = 9 * MiB if i == 0 else rnd.randrange(0, 20_000)
        data = random_bytes(size, seed * 1000 + i)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[rel.as_posix()] = hashlib.sha256(data).hexdigest()
    return out


def tree_of(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


def run(cmd: list[str], env: dict, timeout: int = 600) -> str:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\nstdout: {done.stdout[-3000:]}\nstderr: {done.stderr[-3000:]}"
    return done.stdout


# --- aws-cli --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def aws(s3_stack, s3_keys, tmp_path_factory):
    home = tmp_path_factory.mktemp("awshome")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": s3_keys[0], "AWS_SECRET_ACCESS_KEY": s3_keys[1],
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(home / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"), "HOME": str(home)}

    def aws(*args: str) -> str:
        return run([str(BIN / "aws"), "--endpoint-url", s3_stack.s3_url, *args], env)

    return aws


def test_aws_cli_cp_sync_ls_rm_both_ways(aws, tmp_path):
    src, back = tmp_path / "src", tmp_path / "back"
    expected = make_tree(src, seed=1)
    aws("s3", "mb", "s3://awscli")
    one = src / "d1" / "sub 1" / "f1.txt"
    aws("s3", "cp", str(one), "s3://awscli/single/f1.txt")
    aws("s3", "cp", "s3://awscli/single/f1.txt", str(tmp_path / "f1.copy"))
    assert (tmp_path / "f1.copy").read_bytes() == one.read_bytes()
    aws("s3", "sync", str(src), "s3://awscli/tree")
    listing = aws("s3", "ls", "--recursive", "s3://awscli/tree/")
    assert len(listing.strip().splitlines()) == TREE_FILES
    assert "d0/" in aws("s3", "ls", "s3://awscli/tree/")
    assert "s3://awscli/tree/" not in aws("s3", "sync", str(src), "s3://awscli/tree")  # nothing left to send
    aws("s3", "sync", "s3://awscli/tree", str(back))
    assert tree_of(back) == expected
    aws("s3", "rm", "s3://awscli/single/f1.txt")
    aws("s3", "rm", "--recursive", "s3://awscli/tree")
    assert aws("s3", "ls", "--recursive", "s3://awscli/").strip() == ""
    aws("s3", "rb", "s3://awscli")
    assert "awscli" not in aws("s3", "ls")


# --- rclone ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rclone(s3_stack, s3_keys, tmp_path_factory):
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},  # no CA bundle over http
           "RCLONE_CONFIG_MINIS3_TYPE": "s3", "RCLONE_CONFIG_MINIS3_PROVIDER": "Other",
           "RCLONE_CONFIG_MINIS3_ENDPOINT": s3_stack.s3_url, "RCLONE_CONFIG_MINIS3_ACCESS_KEY_ID": s3_keys[0],
           "RCLONE_CONFIG_MINIS3_SECRET_ACCESS_KEY": s3_keys[1],
           "RCLONE_CONFIG": str(tmp_path_factory.mktemp("rclone") / "none.conf")}

    def rclone(*args: str) -> str:
        return run(["rclone", *args], env)

    return rclone


def test_rclone_copy_sync_and_check_with_md5(rclone, tmp_path):
    src, back = tmp_path / "src", tmp_path / "back"
    expected = make_tree(src, seed=2)
    rclone("mkdir", "minis3:rclone")
    rclone("copy", str(src), "minis3:rclone/tree")
    rclone("check", str(src), "minis3:rclone/tree")  # compares sizes and MD5s (ETags)
    (src / "d0" / "added.txt").write_bytes(b"new file")
    (src / "d1" / "sub 1" / "f1.txt").unlink()
    (src / "d2" / "sub 2" / "f2.txt").write_bytes(b"changed")
    rclone("sync", str(src), "minis3:rclone/tree")
    rclone("check", str(src), "minis3:rclone/tree")
    rclone("sync", "minis3:rclone/tree", str(back))
    assert tree_of(back) == tree_of(src)
    assert len(tree_of(back)) == len(expected)
    listed = rclone("lsf", "-R", "--files-only", "minis3:rclone/tree").splitlines()
    assert sorted(listed) == sorted(tree_of(src))
    rclone("purge", "minis3:rclone")


def test_rclone_backs_up_into_a_versioned_bucket_and_restores_every_version(rclone, tmp_path):
    """A backup tool's use of versions: rclone turns versioning on, overwrites and deletes; its
    --s3-versions listing shows each old version, and --s3-version-at restores the tree as it was."""
    src = tmp_path / "src"
    src.mkdir()
    rclone("mkdir", "minis3:rclone-versions")
    assert "Enabled" in rclone("backend", "versioning", "minis3:rclone-versions", "Enabled")
    (src / "doc.txt").write_bytes(b"first draft")
    (src / "gone.txt").write_bytes(b"deleted later")
    rclone("sync", str(src), "minis3:rclone-versions")
    first_state = time.time()
    while time.time() < math.floor(first_state) + 1:  # later writes get a later Last-Modified second
        time.sleep(0.05)
    (src / "doc.txt").write_bytes(b"second draft, longer")
    (src / "gone.txt").unlink()
    rclone("sync", str(src), "minis3:rclone-versions")  # overwrites doc.txt, deletes gone.txt (a marker)
    assert sorted(rclone("lsf", "minis3:rclone-versions").split()) == ["doc.txt"]
    versions = rclone("lsf", "--s3-versions", "minis3:rclone-versions").split()
    assert "doc.txt" in versions and "gone.txt" not in versions
    old = [v for v in versions if v.startswith("doc-v") and v.endswith(".txt")]
    assert len(old) == 1, versions  # the first draft, named by its time
    assert rclone("cat", "--s3-versions", f"minis3:rclone-versions/{old[0]}").encode() == b"first draft"
    restored = tmp_path / "restored"
    rclone("copy", "--s3-version-at", datetime.fromtimestamp(first_state, timezone.utc).isoformat(), "minis3:rclone-versions", str(restored))
    assert (restored / "doc.txt").read_bytes() == b"first draft"
    assert (restored / "gone.txt").read_bytes() == b"deleted later"
    assert rclone("cat", "minis3:rclone-versions/doc.txt").encode() == b"second draft, longer"


# --- s3cmd ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def s3cmd(s3_stack, s3_keys, tmp_path_factory):
    conf = tmp_path_factory.mktemp("s3cmd") / "s3cfg"
    host = s3_stack.s3_url.removeprefix("http://")
    conf.write_text(f"[default]\naccess_key = {s3_keys[0]}\nsecret_key = {s3_keys[1]}\nhost_base = {host}\n"
                    f"host_bucket = {host}\nuse_https = False\nbucket_location = us-east-1\n")

    def s3cmd(*args: str) -> str:
        return run(["s3cmd", "-c", str(conf), *args], dict(os.environ))

    return s3cmd


def test_s3cmd_put_get_ls_del(s3cmd, tmp_path):
    small, big = tmp_path / "small.txt", tmp_path / "big.bin"
    small.write_bytes(b"hello from s3cmd")
    big.write_bytes(random_bytes(20 * MiB + 5, 3))  # over s3cmd's 15 MiB multipart chunk
    s3cmd("mb", "s3://s3cmd")
    s3cmd("put", str(small), "s3://s3cmd/dir/small.txt")
    s3cmd("put", str(big), "s3://s3cmd/dir/big.bin")
    listing = s3cmd("ls", "s3://s3cmd/dir/")
    assert "s3://s3cmd/dir/small.txt" in listing and "s3://s3cmd/dir/big.bin" in listing
    s3cmd("get", "s3://s3cmd/dir/small.txt", str(tmp_path / "small.back"))
    s3cmd("get", "s3://s3cmd/dir/big.bin", str(tmp_path / "big.back"))
    assert (tmp_path / "small.back").read_bytes() == small.read_bytes()
    assert (tmp_path / "big.back").read_bytes() == big.read_bytes()
    s3cmd("del", "s3://s3cmd/dir/small.txt")
    s3cmd("del", "s3://s3cmd/dir/big.bin")
    assert "s3://s3cmd/dir/" not in s3cmd("ls", "--recursive", "s3://s3cmd")
    s3cmd("rb", "s3://s3cmd")


# --- minio SDK ------------------------------------------------------------------------------------

def test_minio_sdk_put_get_list_remove(s3_stack, s3_keys):
    from minio import Minio

    client = Minio(s3_stack.s3_url.removeprefix("http://"), access_key=s3_keys[0], secret_key=s3_keys[1],
                   secure=False)
    client.make_bucket("minio-sdk")
    assert client.bucket_exists("minio-sdk")
    small = b"minio bytes"
    big = random_bytes(12 * MiB + 1, 4)  # unknown length: the SDK streams it in multipart parts
    client.put_object("minio-sdk", "a/small", io.BytesIO(small), len(small))
    client.put_object("minio-sdk", "a/big", io.BytesIO(big), -1, part_size=5 * MiB)
    response = client.get_object("minio-sdk", "a/small")
    try:
        assert response.read() == small
    finally:
        response.close()
        response.release_conn()
    response = client.get_object("minio-sdk", "a/big", offset=MiB, length=100)
    try:
        assert response.read() == big[MiB:MiB + 100]
    finally:
        response.close()
        response.release_conn()
    assert sorted(o.object_name for o in client.list_objects("minio-sdk", prefix="a/", recursive=True)) == [
        "a/big", "a/small"]
    assert client.stat_object("minio-sdk", "a/big").size == len(big)
    client.remove_object("minio-sdk", "a/small")
    client.remove_object("minio-sdk", "a/big")
    assert list(client.list_objects("minio-sdk", recursive=True)) == []
    client.remove_bucket("minio-sdk")
