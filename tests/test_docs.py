"""The README is a front door that works: its shell and Python blocks run as written against a
running store, every relative link of the README and docs/ resolves, and every `minis3` command
the documentation names exists."""
from __future__ import annotations

import os
import re
import subprocess

import pytest

from app.cli import build_parser
from tests.stack import BIN, ROOT, Stack

BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_script(web_port: int, s3_port: int) -> str:
    """The README's blocks as one bash script, in order, addressed to this stack's ports; the
    two commands (`make run`, `make test`) are what the test itself stands for."""
    parts = []
    for lang, body in BLOCK.findall((ROOT / "README.md").read_text()):
        if lang == "sh" and "make run" not in body:
            parts.append(body)
        elif lang == "python":
            parts.append(f"python - <<'PYTHON'\n{body}PYTHON\n")
    script = "\n".join(parts)
    return script.replace("127.0.0.1:3000", f"127.0.0.1:{web_port}").replace("127.0.0.1:9000",
                                                                              f"127.0.0.1:{s3_port}")


def test_the_readme_blocks_run_as_written_against_a_running_store(tmp_path, backends):
    s = Stack(tmp_path / "stack", backends, s3=True)
    try:
        script = readme_script(s.settings.port, s.settings.s3_port)
        assert "s3 mb s3://photos" in script and "upload_file" in script  # the blocks were found
        work = tmp_path / "work"
        work.mkdir()
        env = {**s.env, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(tmp_path)}
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_CONFIG_FILE"):
            env.pop(name, None)
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert (work / "copy.jpg").read_bytes() == (work / "photo.jpg").read_bytes()
        assert (work / "again.jpg").read_bytes() == (work / "photo.jpg").read_bytes()
        assert "2026/photo.jpg" in done.stdout and "Signature=" in done.stdout  # the listing; the presigned URL
    finally:
        s.stop()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    missing = [target for target in LINK.findall(doc.read_text())
               if "://" not in target and not (doc.parent / target).exists()]
    assert missing == []


def test_every_minis3_command_the_docs_name_exists(capsys):
    named = {m for doc in DOCS for m in re.findall(r"\bminis3 ([a-z][a-z-]+)", doc.read_text())}
    assert {"run", "keys", "fsck"} <= named
    unknown = set()
    for command in sorted(named):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([command, "--help"])
        if exited.value.code != 0:  # --help of a known command exits 0; argparse refuses others with 2
            unknown.add(command)
    capsys.readouterr()
    assert unknown == set()
