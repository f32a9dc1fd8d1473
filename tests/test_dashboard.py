"""The dashboard in a real headless Chromium (Playwright) over a real stack, and the API it uses:
search (``q``), a file's chunks (``/api/files/<id>/chunks``), per-tenant usage and the history of
samples and jobs."""
from __future__ import annotations

import hashlib
import os
import re
import uuid

import pytest
import requests

from pipeline.access.keys import ApiKeys
from pipeline.metadata.repositories import Metadata
from pipeline.store import ObjectStore
from tests.browser import chromium
from tests.stack import MiB, Stack, random_bytes, wait_for


@pytest.fixture(scope="module")
def dash(tmp_path_factory, backends):
    """A stack with beat sampling every 2 s and keys required: tenants acme and other, admin ops."""
    s = Stack(tmp_path_factory.mktemp("dash"), backends, beat=True, auth="required", sample_interval_s=2.0)
    meta = Metadata.connect(s.settings.mongo_url, s.settings.mongo_db)
    keys = ApiKeys(meta)
    s.keys = {name: keys.create(name, admin=(name == "ops"))[0] for name in ("acme", "other", "ops")}
    s.meta = meta
    yield s
    s.stop()
    meta.client.close()


def auth(stack, tenant: str) -> dict:
    return {"X-API-Key": stack.keys[tenant]}


def get(stack, path: str, tenant: str, **params) -> requests.Response:
    return requests.get(stack.url(path), headers=auth(stack, tenant), params=params, timeout=60)


# --- the API the dashboard uses ------------------------------------------------------------------

def test_search_finds_files_by_name_prefix_bucket_key_and_sha256_prefix_of_the_callers_tenant_only(dash):
    tag = uuid.uuid4().hex[:8]
    a = dash.put(random_bytes(1000, 1), f"Quarterly-{tag}.pdf", headers=auth(dash, "acme"))
    b = dash.put(random_bytes(1000, 2), f"photo-{tag}.jpg", headers=auth(dash, "acme"))
    c = dash.put(random_bytes(1000, 1), f"Quarterly-{tag}.pdf", headers=auth(dash, "other"))  # same name & bytes
    dash.meta.files.set_file_name(b, f"pics-{tag}", "2024/summer/photo.jpg")
    sha_a = hashlib.sha256(random_bytes(1000, 1)).hexdigest()

    def ids(tenant, q, **kw):
        r = get(dash, "/api/files", tenant, q=q, **kw)
        assert r.status_code == 200, r.text
        return [f["fileId"] for f in r.json()["files"]]

    assert ids("acme", f"quarterly-{tag}") == [a]  # case-insensitive name prefix
    a2 = dash.put(random_bytes(1000, 3), f"quarterly-{tag}-v2.pdf", headers=auth(dash, "acme"))
    assert ids("acme", f"quarterly-{tag}") == [a2, a]  # newest first
    first = get(dash, "/api/files", "acme", q=f"quarterly-{tag}", limit=1).json()
    assert [f["fileId"] for f in first["files"]] == [a2] and first["nextCursor"] == a2
    assert ids("acme", f"quarterly-{tag}", limit=1, cursor=first["nextCursor"]) == [a]  # the search, paged
    assert ids("acme", f"QUARTERLY-{tag}.PDF") == [a]
    assert ids("acme", f"uarterly-{tag}") == []  # a prefix, not a substring
    assert ids("acme", f"pics-{tag}/2024/") == [b]  # bucket/key prefix
    assert ids("acme", f"pics-{tag}") == [b]  # a bucket's files
    assert ids("acme", f"pics-{tag}/2023") == []
    assert ids("acme", sha_a[:10]) == [a]  # SHA-256 prefix, tenant's own files only
    assert ids("acme", sha_a[:10].upper()) == [a]
    assert ids("other", sha_a[:10]) == [c]
    assert ids("acme", sha_a) == [a]
    # newest first, paged with the cursor like the plain listing
    page1 = get(dash, "/api/files", "acme", q=f"photo-{tag}", limit=1).json()
    assert [f["fileId"] for f in page1["files"]] == [b] and page1["nextCursor"] is None
    for q in ("x" * 257, "bad\x00q"):
        r = get(dash, "/api/files", "acme", q=q)
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_request"


def fragment_nodes(doc: dict) -> str:
    """How a chunk's row names the node of each fragment: one node for a whole copy."""
    if (doc["k"], doc["m"]) == (1, 0):
        return doc["frags"][0]["node"]
    return ", ".join(f"{f['node']} (#{f['i']}{' parity' if f['i'] >= doc['k'] else ''})" for f in doc["frags"])


def test_chunks_of_a_file_name_their_nodes_and_count_sharing_within_the_tenant_for_tenants(dash):
    head = random_bytes(2 * MiB, 31)
    big = head + random_bytes(2 * MiB, 32)
    acme_big = dash.put(big, "big.bin", headers=auth(dash, "acme"))
    acme_twin = dash.put(head + b"tail", "twin.bin", headers=auth(dash, "acme"))
    dash.put(big[2 * MiB:3 * MiB], "third-chunk.bin", headers=auth(dash, "other"))  # another tenant
    ops_copy = dash.put(big[2 * MiB:3 * MiB], "ops-copy.bin", headers=auth(dash, "ops"))

    r = get(dash, f"/api/files/{acme_big}/chunks", "acme", limit=3)
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["scope"] == "tenant" and page["file"]["fileId"] == acme_big and page["nextCursor"] == "3"
    chunks = page["chunks"]
    assert [c["index"] for c in chunks] == [0, 1, 2]
    assert [c["offset"] for c in chunks] == [0, MiB, 2 * MiB]
    for c in chunks:
        doc = dash.meta.db.chunks.find_one({"_id": c["sha256"]})
        assert c["state"] == "stored" and c["layout"] == f"{doc['k']}+{doc['m']}"
        assert [f["node"] for f in c["fragments"]] == [f["node"] for f in doc["frags"]]
    # the twin shares the first two chunks; the other tenant's copy of chunk 2 is not counted
    assert [c["sharedWith"] for c in chunks] == [1, 1, 0]
    assert chunks[0]["sharedFiles"] == [{"fileId": acme_twin, "name": "twin.bin"}]
    rest = get(dash, f"/api/files/{acme_big}/chunks", "acme", cursor="3").json()
    assert [c["index"] for c in rest["chunks"]] == [3] and rest["nextCursor"] is None

    # an admin counts every tenant's files, and names none of theirs
    admin = get(dash, f"/api/files/{ops_copy}/chunks", "ops").json()
    assert admin["scope"] == "store"
    assert admin["chunks"][0]["sharedWith"] == 2 and admin["chunks"][0]["sharedFiles"] == []
    tenant_view = get(dash, f"/api/files/{ops_copy}/chunks", "other")
    assert tenant_view.status_code == 404  # another tenant's file, like any unknown id

    for params in ({"cursor": "-1"}, {"cursor": "x"}, {"limit": "0"}, {"limit": "201"}):
        r = get(dash, f"/api/files/{acme_big}/chunks", "acme", **params)
        assert r.status_code == 400, params
    assert get(dash, "/api/files/zzz/chunks", "acme").status_code == 400


def test_samples_record_queue_depth_and_throughput_and_each_tenant_sees_only_its_own_usage(dash):
    data = random_bytes(3 * MiB, 41)
    dash.put(data, "u1.bin", headers=auth(dash, "other"))
    dash.put(data, "u2.bin", headers=auth(dash, "other"))  # same bytes: other's own dedup is 2x here
    store = ObjectStore.from_settings(dash.settings)
    try:
        sample = store.usage().take_sample(lambda: 0)
        store.usage().refresh_usage()
        own = store.usage().tenant_usage("other")
        files = list(dash.meta.db.files.find({"tenant": "other", "status": "stored"}))
        assert own["logicalBytes"] == sum(f["size"] for f in files)
        assert own["physicalBytes"] < own["logicalBytes"]
        assert sample["queueDepth"] == 0 and sample["physicalBytes"] > 0
        store.garbage_collector().collect()
    finally:
        store.meta.client.close()

    stats = get(dash, "/api/stats", "other").json()
    assert stats["scope"] == "tenant" and stats["usage"]["tenant"] == "other"
    assert stats["usage"]["physicalBytes"] == own["physicalBytes"]
    admin = get(dash, "/api/stats", "ops").json()
    assert {t["tenant"] for t in admin["tenants"]} >= {"acme", "other", "ops"}
    assert get(dash, "/api/stats/history", "other").status_code == 403
    history = wait_for(lambda: (h := get(dash, "/api/stats/history", "ops").json())["samples"] and h,
                       what="a sample")
    assert history["sampleIntervalSeconds"] == 2.0
    assert all({"at", "queueDepth", "storedBytes", "throughputBytesPerS"} <= set(s) for s in history["samples"])
    assert sum(s["storedBytes"] for s in history["samples"]) > 0
    assert history["events"]["gc"][0]["at"].endswith("Z")
    assert get(dash, "/api/stats/history", "ops", window="10").status_code == 400


# --- the browser ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


class Tab:
    """One browser tab, with the CSP violations and page errors it met."""

    def __init__(self, browser, stack, shots):
        self.context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.stack, self.shots = stack, shots
        self.problems: list[str] = []
        # refused API calls (401 before signing in) are the page's to handle; anything else is a problem
        self.page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
                     and self.problems.append(m.text))
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))

    def goto(self, path: str) -> None:
        self.page.goto(self.stack.url(path))
        if not path.startswith("/signin"):
            self.page.wait_for_selector("body[data-ready='1']", timeout=30_000)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.shots / f"{name}.png"), full_page=True)

    def sign_in(self, key: str) -> None:
        self.page.goto(self.stack.url("/signin"))
        self.page.fill("#api-key", key)
        self.page.click("#signin-form button[type=submit]")
        self.page.wait_for_selector("body[data-page='files'][data-ready='1']")


def test_dashboard_signs_in_uploads_20_mib_finds_opens_downloads_and_deletes_a_file(dash, browser, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    tab = Tab(browser, dash, shots)
    page = tab.page
    data = random_bytes(20 * MiB, 51)
    sha = hashlib.sha256(data).hexdigest()
    name = f"Dashboard-{uuid.uuid4().hex[:6]}.bin"
    source = tmp_path / name
    source.write_bytes(data)

    # pages need a key: the files page sends us to sign in, where a bad key is refused
    page.goto(dash.url("/"))
    page.wait_for_url("**/signin")
    page.fill("#api-key", "ms3_000000000000_" + "x" * 43)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#signin-error:not([hidden])")
    assert "unknown or revoked" in page.text_content("#signin-error")
    tab.shot("signin")
    tab.sign_in(dash.keys["acme"])
    assert page.text_content("#who").strip() == "acme"
    assert page.evaluate("sessionStorage.getItem('minis3.apiKey')") == dash.keys["acme"]
    assert not page.context.cookies() and dash.keys["acme"] not in page.url

    # upload by the file picker; record every state the row shows until stored
    tab.goto("/upload")
    page.evaluate("""() => { window.seen = []; new MutationObserver(() => {
        const s = document.querySelector('#uploads .upload .state'); if (s) window.seen.push(s.textContent);
      }).observe(document.querySelector('#uploads'), {subtree: true, childList: true, characterData: true}); }""")
    page.set_input_files("#picker", str(source))
    row = page.wait_for_selector("#uploads .upload[data-status='stored']", timeout=120_000)
    assert row.query_selector(".state").text_content() == "stored: 20 chunks"
    sent = row.query_selector(".sent")
    ingest = row.query_selector(".ingest")
    assert sent.evaluate("e => [e.value, e.max]") == [1, 1]
    assert ingest.evaluate("e => [e.value, e.max]") == [20, 20]
    seen = page.evaluate("window.seen")  # e.g. sending…, sending 76% (15.2 MiB), sending 100% (20.0 MiB),
    assert "sending 100% (20.0 MiB)" in seen and seen[-1] == "stored: 20 chunks"  # processing: 0 of 20…
    ingesting = [s for s in seen[seen.index("sending 100% (20.0 MiB)") + 1:-1]]
    assert all(re.fullmatch(r"(queued|processing): \d+ of 20 chunks", s) for s in ingesting), seen
    file_id = row.get_attribute("data-file-id")
    assert re.fullmatch(r"[0-9a-f]{24}", file_id)
    tab.shot("upload")
    status = dash.wait_status(file_id, headers=auth(dash, "acme"))
    assert status["status"] == "stored" and status["progress"]["chunksTotal"] == 20

    # a twin sharing the first two chunks, so that the file page shows sharing
    twin = dash.put(data[:2 * MiB] + b"!", "twin-of-dashboard.bin", headers=auth(dash, "acme"))

    # find it by search: SHA-256 prefix, then a case-changed name prefix, then nothing
    tab.goto(f"/?q={sha[:12]}")
    rows = page.query_selector_all("#files tbody tr")
    assert [r.get_attribute("data-file-id") for r in rows] == [file_id]
    cells = [c.text_content() for c in rows[0].query_selector_all("td")]
    assert cells[0] == name and cells[2] == "20.0 MiB" and cells[3] == "stored" and cells[4] == sha[:12]
    page.fill("#q", name[:12].lower())
    page.click("#search-form button[type=submit]")
    page.wait_for_url(f"**/?q={name[:12].lower()}")
    page.wait_for_selector("body[data-ready='1']")
    assert [r.get_attribute("data-file-id") for r in page.query_selector_all("#files tbody tr")] == [file_id]
    tab.shot("files")
    tab.goto("/?q=no-such-file-anywhere")
    assert page.query_selector_all("#files tbody tr") == []
    assert "No file matches" in page.text_content("#files-empty")

    # open it: every chunk with the node that holds it, and the two it shares with the twin
    tab.goto("/")
    page.click(f"#files tbody tr[data-file-id='{file_id}'] a")
    page.wait_for_url(f"**/files/{file_id}")
    page.wait_for_selector("body[data-ready='1']")
    assert page.text_content("#file-name") == name
    assert "20.0 MiB (20,971,520 bytes)" in page.text_content("#file-facts")
    assert sha in page.text_content("#file-facts")
    chunk_rows = page.query_selector_all("#chunks tbody tr")
    assert len(chunk_rows) == 20
    for i, r in enumerate(chunk_rows):
        cells = [c.text_content() for c in r.query_selector_all("td")]
        doc = dash.meta.db.chunks.find_one({"_id": {"$regex": f"^{cells[3]}"}})
        assert cells[0] == str(i) and cells[2] == "1.0 MiB" and cells[4] == "stored"
        assert cells[6] == fragment_nodes(doc)
        assert cells[7] == ("1 file twin-of-dashboard.bin" if i < 2 else "none")
    assert page.text_content("#chunk-summary") == \
        "20 chunks · 20 shown · 2 of them shared with your other files"
    tab.shot("file")

    # download it byte-exact
    with page.expect_download() as info:
        page.click("#download")
    saved = tmp_path / "downloaded.bin"
    info.value.save_as(saved)
    assert info.value.suggested_filename == name
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == sha

    # the store as this tenant sees it: its own figures only
    wait_for(lambda: get(dash, "/api/stats", "acme").json()["usage"], what="acme's usage")
    tab.goto("/store")
    stats = get(dash, "/api/stats", "acme").json()
    assert page.text_content("#store-title") == "Your usage"
    assert page.text_content("#fig-logical .detail").startswith(f"{stats['logicalBytes']:,} bytes")
    assert page.is_hidden("#nodes-card") and page.is_hidden("#history-card")
    tab.shot("store-tenant")

    # delete it, after a confirmation that can be cancelled
    tab.goto(f"/files/{file_id}")
    page.click("#delete")
    page.wait_for_selector("#confirm[open]")
    assert name in page.text_content("#confirm-text")
    page.click("#confirm button[value=cancel]")
    assert get(dash, f"/api/files/{file_id}/status", "acme").status_code == 200
    page.click("#delete")
    page.click("#confirm-ok")
    page.wait_for_selector("#notice.ok")
    assert page.text_content("#notice") == f"Deleted “{name}”."
    page.wait_for_url(dash.url("/"))
    page.wait_for_selector("body[data-ready='1']")
    assert page.query_selector(f"#files tbody tr[data-file-id='{file_id}']") is None
    assert page.query_selector(f"#files tbody tr[data-file-id='{twin}']") is not None
    assert get(dash, f"/api/files/{file_id}/status", "acme").status_code == 404

    assert tab.problems == [], tab.problems
    tab.context.close()


def test_dashboard_store_page_shows_an_admin_the_whole_store_with_charts(dash, browser, tmp_path):
    dash.put(random_bytes(2 * MiB, 61), "ops-file.bin", headers=auth(dash, "ops"))
    store = ObjectStore.from_settings(dash.settings)
    try:
        store.garbage_collector().collect()  # one GC run in the history
    finally:
        store.meta.client.close()
    wait_for(lambda: len(get(dash, "/api/stats/history", "ops").json()["samples"]) >= 2, what="two samples")
    tab = Tab(browser, dash, tmp_path)
    page = tab.page
    tab.sign_in(dash.keys["ops"])
    assert page.text_content("#who").strip() == "ops · admin"
    tab.goto("/store")
    page.wait_for_selector("#history-card:not([hidden]) #chart-queue canvas")
    stats = get(dash, "/api/stats", "ops").json()
    assert page.text_content("#fig-physical .detail") == f"{stats['physicalBytes']:,} bytes on the nodes"
    assert page.text_content("#fig-ratio .value") == f"{stats['dedupRatio']:.2f}×"
    node_rows = page.query_selector_all("#nodes tbody tr")
    assert [r.get_attribute("data-node") for r in node_rows] == [n["node"] for n in stats["nodes"]]
    total = sum(n["bytes"] for n in stats["nodes"])
    for r, n in zip(node_rows, stats["nodes"]):
        share = r.query_selector("meter").get_attribute("value")
        assert abs(float(share) - n["bytes"] / total) < 1e-3
    tenants = {r.get_attribute("data-tenant") for r in page.query_selector_all("#tenants tbody tr")}
    assert {"acme", "other", "ops"} <= tenants
    redundancy = stats["physicalBytes"] - stats["uniqueBytes"]
    shown_saved = page.evaluate("(n) => window.MiniS3.formatBytes(n)", stats["dedupSavedBytes"])
    assert page.text_content("#fig-ratio .detail") == f"{shown_saved} saved by dedup"
    assert page.text_content("#fig-redundancy .detail").startswith(f"{redundancy:,} bytes of coding over ")
    # each chart drew exactly the figures it was given, and its canvas is not blank
    samples = get(dash, "/api/stats/history?window=3600", "ops").json()["samples"]
    drawn = page.evaluate("""() => Object.fromEntries(Object.entries(window.MiniS3Charts.drawn)
        .map(([name, u]) => [name, u.data.map((series) => Array.from(series))]))""")
    shown = len(drawn["queue"][1])
    assert 2 <= shown <= len(samples)  # the page loaded its history before ours: a prefix of it
    samples = samples[:shown]
    assert drawn["queue"][1] == [s["queueDepth"] for s in samples]
    assert drawn["dedup"][1] == [s["logicalBytes"] for s in samples]
    assert drawn["dedup"][4] == [max(0, s["physicalBytes"] - s["uniqueBytes"]) for s in samples]
    assert drawn["nodes"][1] == [n["bytes"] for n in stats["nodes"]]
    for chart in ("#chart-nodes", "#chart-queue", "#chart-dedup"):
        painted = page.evaluate("""(sel) => { const c = document.querySelector(sel + " canvas");
            const px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
            for (let i = 3; i < px.length; i += 4) if (px[i] !== 0) return true; return false; }""", chart)
        assert painted, chart
    assert page.query_selector_all("#job-gc tbody tr"), "the GC run is listed"
    assert "samples, one every 2 s" in page.text_content("#history-note")
    tab.shot("store-admin")
    if os.environ.get("MINIS3_DOCS_SCREENSHOT"):  # refresh the README's picture
        page.screenshot(path=os.environ["MINIS3_DOCS_SCREENSHOT"], full_page=True)
    assert tab.problems == []
    tab.context.close()


def test_dashboard_pages_carry_their_own_csp_and_the_api_keeps_its_headers(dash):
    page = requests.get(dash.url("/"), timeout=30)
    csp = page.headers["Content-Security-Policy"]
    assert page.status_code == 200 and "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "<script>" not in page.text and " style=" not in page.text and " on" + "click=" not in page.text
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    api = requests.get(dash.url("/api/stats"), headers=auth(dash, "acme"), timeout=30)
    assert api.headers["Content-Security-Policy"].startswith("default-src 'none'")
    js = requests.get(dash.url("/dashboard/static/vendor/uplot/uPlot.iife.min.js"), timeout=30)
    assert js.status_code == 200 and js.headers["Content-Type"].startswith("text/javascript")
    assert requests.get(dash.url("/files/not-an-id"), timeout=30).status_code == 400


def test_dashboard_in_open_mode_needs_no_key(tmp_path, backends, browser):
    s = Stack(tmp_path / "open", backends, worker=False, auth="open")
    try:
        tab = Tab(browser, s, tmp_path)
        tab.goto("/")
        assert tab.page.text_content("#who") == "default · admin (open mode: no key needed)"
        assert tab.page.is_hidden("#signout")
        assert "No files yet" in tab.page.text_content("#files-empty")
        assert tab.problems == []
        tab.context.close()
    finally:
        s.stop()
