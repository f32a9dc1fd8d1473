"""S3 from a real browser page on another origin (headless Chromium, Playwright): a presigned PUT
with ``fetch`` under the bucket's CORS rules, and an HTML form POST upload that redirects back."""
from __future__ import annotations

import hashlib
import html
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser import chromium
from tests.s3clients import boto3_client
from tests.stack import random_bytes


class Pages:
    """A tiny web server on its own port (another origin than the S3 port) serving given pages."""

    def __init__(self):
        pages: dict[str, str] = {}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                body = pages.get(urlsplit(self.path).path, "<!doctype html><title>page</title><p>ok</p>").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.pages = pages
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def pages():
    p = Pages()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def s3(s3_stack, s3_keys):
    return boto3_client(s3_stack, s3_keys)


@pytest.fixture
def page(browser):
    context = browser.new_context()
    yield context.new_page()
    context.close()


FETCH_PUT = """async ([url, text]) => {
  try {
    const r = await fetch(url, {method: "PUT", body: new TextEncoder().encode(text)});
    return {status: r.status, etag: r.headers.get("ETag")};
  } catch (e) {
    return {error: String(e)};
  }
}"""


def test_a_page_on_another_origin_puts_with_a_presigned_url_and_reads_the_etag(s3, pages, page):
    s3.create_bucket(Bucket="browser-put")
    s3.put_bucket_cors(Bucket="browser-put", CORSConfiguration={"CORSRules": [
        {"AllowedOrigins": [pages.origin], "AllowedMethods": ["PUT"], "ExposeHeaders": ["ETag"]}]})
    text = "written by a browser ✓"
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "browser-put", "Key": "from-page.txt"})
    page.goto(pages.origin + "/blank.html")
    result = page.evaluate(FETCH_PUT, [url, text])
    data = text.encode()
    assert result == {"status": 200, "etag": f'"{hashlib.md5(data).hexdigest()}"'}
    assert s3.get_object(Bucket="browser-put", Key="from-page.txt")["Body"].read() == data


def test_the_browser_refuses_a_put_the_bucket_cors_does_not_allow(s3, pages, page):
    s3.create_bucket(Bucket="browser-closed")
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "browser-closed", "Key": "blocked.txt"})
    page.goto(pages.origin + "/blank.html")
    result = page.evaluate(FETCH_PUT, [url, "never stored"])
    assert "error" in result  # the preflight was refused: fetch rejects, nothing was sent
    assert s3.list_objects_v2(Bucket="browser-closed")["KeyCount"] == 0


def test_an_html_form_on_another_origin_uploads_and_redirects_back(s3, pages, page):
    s3.create_bucket(Bucket="browser-form")
    done = pages.origin + "/done"
    presigned = s3.generate_presigned_post("browser-form", "inbox/${filename}",
                                           Fields={"success_action_redirect": done, "Content-Type": "text/plain"},
                                           Conditions=[{"success_action_redirect": done},
                                                       ["starts-with", "$Content-Type", "text/"],
                                                       ["content-length-range", 1, 1 << 20]])
    hidden = "".join(f'<input type="hidden" name="{html.escape(n)}" value="{html.escape(v)}">'
                     for n, v in presigned["fields"].items())
    pages.pages["/form.html"] = (
        f'<!doctype html><title>upload</title><form action="{html.escape(presigned["url"])}" method="post" '
        f'enctype="multipart/form-data">{hidden}<input type="file" name="file"><button type="submit">Upload'
        "</button></form>")
    data = random_bytes(200_000, seed=9)
    page.goto(pages.origin + "/form.html")
    page.set_input_files("input[type=file]", files=[{"name": "report.txt", "mimeType": "text/plain",
                                                      "buffer": data}])
    with page.expect_navigation(url=lambda u: u.startswith(done), timeout=60_000):
        page.click("button[type=submit]")
    query = parse_qs(urlsplit(page.url).query)
    etag = f'"{hashlib.md5(data).hexdigest()}"'
    assert query == {"bucket": ["browser-form"], "key": ["inbox/report.txt"], "etag": [etag]}
    got = s3.get_object(Bucket="browser-form", Key="inbox/report.txt")
    assert got["Body"].read() == data and got["ETag"] == etag and got["ContentType"] == "text/plain"
