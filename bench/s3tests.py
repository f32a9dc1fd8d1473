#!/usr/bin/env python3
"""This store against the public ceph s3-tests suite (s3tests/functional/test_s3.py), in one run.

Starts a private store as the benchmarks do (Redis, nx-27017, web, S3 front end, worker on free
ports, tests/stack.py), makes three S3 identities of three tenants (main, alt, tenant; the suite's
IAM sections get identities too, unused), writes the suite's S3TEST_CONF, runs pytest in the
suite's own venv, summarises its JUnit XML and stops the store.

Setup, once (the suite is not vendored; any checkout of github.com/ceph/s3-tests works):

    git clone https://github.com/ceph/s3-tests /work/s3t   # or git archive of a mirror, untarred there,
    git -C /work/s3t rev-parse HEAD > /work/s3t/.commit    # then write the commit id to .commit
    python3 -m venv /work/s3t/.venv && /work/s3t/.venv/bin/pip install -r /work/s3t/requirements.txt pytest-timeout

Run (from the repository, with the project's venv):

    .venv/bin/python bench/s3tests.py --suite /work/s3t                       # 464 tests: est. 10-30 min
    .venv/bin/python bench/s3tests.py --suite /work/s3t -k "list_objects or bucket_create"   # a smoke run
    .venv/bin/python bench/s3tests.py --suite /work/s3t --keep -- -x -vv      # after --: more pytest options

Prints and writes ``bench/results/<UTC time>-s3tests.md``: passed/failed/errored/skipped counts,
the most common failure reasons and each failed test with the first line of its reason. With
``--keep`` the run's directory (s3tests.conf, junit.xml, pytest.log, the store's logs) stays
under var/. The store runs with its S3 request rate limits off (they are operational, and the
suite sends many unsigned requests). Tests of features the suite itself marks as IAM/STS/rgw-only,
or that docs/s3.md lists as answering 501 NotImplemented, are deselected (EXCLUDED below).
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.s3clients import REGION, boto3_client  # noqa: E402
from tests.stack import Backends, Stack  # noqa: E402

TEST_FILE = "s3tests/functional/test_s3.py"
# Markers from the suite's pytest.ini whose tests are deselected.
EXCLUDED = [
    # IAM, STS and rgw-only features, or expectations of one server only
    "iam_account", "iam_tenant", "iam_role", "iam_user", "iam_cross_account", "role_policy", "user_policy",
    "group_policy", "test_of_sts", "webidentity_test", "token_claims_trust_policy_test",
    "appendobject", "fails_on_aws", "fails_on_rgw", "fails_with_subdomain",
    "lifecycle_expiration", "lifecycle_transition", "cloud_transition", "cloud_restore",  # rgw's lc debug clock
    # answered 501 NotImplemented by design (docs/s3.md): SSE, website, logging, SNS, Select, SigV2 headers
    "sse_s3", "encryption", "bucket_encryption", "s3website", "bucket_logging", "sns", "s3select", "auth_aws2",
]
IDENTITIES = ["main", "alt", "tenant", "iam", "iam root", "iam alt root"]


def identity(stack: Stack, run: str, role: str) -> dict:
    """Credentials of a new tenant, and the Owner ID/DisplayName the store answers for it."""
    tenant = f"s3t-{run}-{role.replace(' ', '-')}"
    key, secret = stack.s3_credentials(tenant)
    s3 = boto3_client(stack, (key, secret), retries={"max_attempts": 1})
    probe = f"s3t-probe-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=probe)
    owner = s3.list_buckets()["Owner"]
    s3.delete_bucket(Bucket=probe)
    return {"tenant": tenant, "access_key": key, "secret_key": secret, "user_id": owner["ID"],
            "display_name": owner.get("DisplayName", owner["ID"]), "email": f"{tenant}@example.com"}


def write_conf(path: Path, port: int, ids: dict[str, dict]) -> None:
    lines = ["[DEFAULT]", "host = 127.0.0.1", f"port = {port}", "is_secure = False", "ssl_verify = False", "",
             "[fixtures]", "bucket prefix = s3t-{random}-", "iam name prefix = s3-tests-",
             "iam path prefix = /s3-tests/", ""]
    for role in IDENTITIES:
        ident = ids[role]
        lines.append(f"[{role}]" if role.startswith("iam") else f"[s3 {role}]")
        lines += [f"{k} = {ident[k]}" for k in ("display_name", "user_id", "email", "access_key", "secret_key")]
        lines += ["api_name = default"] if role == "main" else []
        lines += [f"tenant = {ident['tenant']}"] if role == "tenant" else []
        lines.append("")
    path.write_text("\n".join(lines))


def summarise(junit: Path) -> tuple[Counter, list[tuple[str, str, str]]]:
    """Counts by outcome, and (outcome, test, first line of the reason) of each failure or error."""
    counts: Counter = Counter()
    bad = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "?")
        child = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
        if child is None:
            counts["passed"] += 1
            continue
        outcome = {"failure": "failed", "error": "errored", "skipped": "skipped"}[child.tag]
        counts[outcome] += 1
        if outcome != "skipped":
            text = (child.get("message") or child.text or "").strip()
            reason = next((ln.strip() for ln in text.splitlines() if ln.strip()), "(no message)")
            bad.append((outcome, name, reason[:200]))
    return counts, sorted(bad, key=lambda b: b[1])


def report(counts: Counter, bad, header: list[str]) -> str:
    total = sum(counts.values())
    out = [*header, "", "| passed | failed | errored | skipped | total |", "| --- | --- | --- | --- | --- |",
           f"| {counts['passed']} | {counts['failed']} | {counts['errored']} | {counts['skipped']} | {total} |", ""]
    if bad:
        out += ["## Most common reasons", ""]
        out += [f"- {n} x `{r}`" for r, n in Counter(r for _, _, r in bad).most_common(10)]
        out += ["", "## Failed and errored tests", ""]
        out += [f"- `{name}` ({outcome}): {reason}" for outcome, name, reason in bad]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", type=Path, required=True, help="a work tree of ceph/s3-tests with its .venv")
    parser.add_argument("--python", type=Path, help="the suite's Python (default: SUITE/.venv/bin/python)")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression: a subset of the tests")
    parser.add_argument("--timeout", type=int, default=300, help="seconds per test (pytest-timeout, if installed)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory (conf, logs, store data)")
    parser.add_argument("--dir", type=Path, default=ROOT / "var", help="where the run's directory goes (var/)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results")
    parser.add_argument("pytest_args", nargs="*", help="after --: more pytest options")
    args = parser.parse_args(argv)
    suite = args.suite.resolve()
    python = args.python or suite / ".venv/bin/python"
    if not (suite / TEST_FILE).exists() or not python.exists():
        parser.error(f"no {TEST_FILE} or no {python}: see the setup in this script's docstring")
    known = set((suite / "pytest.ini").read_text().split())
    markers = [m for m in EXCLUDED if m in known]  # a marker the suite no longer has selects nothing
    commit = (suite / ".commit").read_text().strip() if (suite / ".commit").exists() else subprocess.run(
        ["git", "-C", str(suite), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"

    args.dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-s3tests-", dir=args.dir)).resolve()
    started = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(started))
    junit, conf = work / "junit.xml", work / "s3tests.conf"
    backends = stack = None
    try:
        backends = Backends(work / "backends")
        stack = Stack(work / "store", backends, s3=True, s3_rate_limit="", s3_failed_rate_limit="")
        ids = {role: identity(stack, stamp[-6:], role) for role in IDENTITIES}
        write_conf(conf, stack.settings.s3_port, ids)
        print(f"store up at {stack.s3_url}; conf {conf}", flush=True)
        home = work / "aws"
        home.mkdir()
        for name in ("config", "credentials"):  # none of the user's AWS settings
            (home / name).write_text("")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VIRTUAL_ENV", "PYTHON"))},
               "S3TEST_CONF": str(conf), "AWS_DEFAULT_REGION": REGION, "AWS_CONFIG_FILE": str(home / "config"),
               "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials")}
        has_timeout = subprocess.run([str(python), "-c", "import pytest_timeout"], capture_output=True).returncode == 0
        cmd = [str(python), "-m", "pytest", TEST_FILE, "-q", "-p", "no:cacheprovider", "-rN",
               "-m", f"not ({' or '.join(markers)})", f"--junitxml={junit}",
               *([f"--timeout={args.timeout}"] if has_timeout else []),
               *(["-k", args.keyword] if args.keyword else []), *args.pytest_args]
        print("$ " + shlex.join(cmd), flush=True)
        with open(work / "pytest.log", "wb") as log:
            proc = subprocess.Popen(cmd, cwd=suite, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for line in proc.stdout:
                log.write(line)
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
            rc = proc.wait()
    finally:
        if stack is not None:
            stack.stop()
        if backends is not None:
            backends.stop()

    if not junit.exists():
        print(f"pytest exited {rc} and wrote no JUnit XML; see {work / 'pytest.log'}")
        return rc or 2
    counts, bad = summarise(junit)
    shown = shlex.join(sys.argv[1:] if argv is None else argv)
    header = [f"# ceph s3-tests, {stamp} UTC", "",
              f"Suite {commit[:12]}, `{TEST_FILE}`; `bench/s3tests.py {shown}`; pytest exit {rc}; "
              f"{time.time() - started:.0f} s on {os.cpu_count()} CPUs.",
              f"Deselected markers: {', '.join(markers)}."]
    text = report(counts, bad, header)
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{stamp}-s3tests.md"
    path.write_text(text)
    print(f"wrote {path}" + (f"; run directory kept: {work}" if args.keep else ""))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if rc in (0, 1) else rc


if __name__ == "__main__":
    sys.exit(main())
