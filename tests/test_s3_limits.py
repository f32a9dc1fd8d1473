"""Who pays for a request (in-process S3 app over a real store, Redis and MongoDB): verified
requests count against their access key, unsigned and failed ones against the client's address;
unknown access key ids cost one MongoDB read per cache window. Also what AWS answers an expired
or malformed presigned URL and an anonymous request."""
from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from urllib.parse import quote, urlsplit

import pytest

from app.s3.routes import create_s3_app
from pipeline.access import credentials as credentials_module
from pipeline.access.credentials import S3Credentials
from pipeline.cache import Generation
from tests.s3clients import presign, sign

SECRET = "test-server-secret"


@pytest.fixture
def make_app(store, settings):
    def make(**overrides):
        s = settings.with_overrides(secret_key=SECRET, **overrides)
        store.settings = s
        return create_s3_app(s, store, enqueue=lambda *a, **k: None)

    return make


@pytest.fixture
def keys(store):
    return S3Credentials(store.meta, SECRET).create("acme")


@pytest.fixture
def address():
    """A client address of this test alone (the limits' Redis outlives a test)."""
    n = uuid.uuid4().int
    return f"10.{n % 250}.{n // 250 % 250}.{n // 62500 % 250 + 1}"


@pytest.fixture
def mongo_reads(store, monkeypatch):
    """Every MongoDB read of an S3 credential, by access key id."""
    reads: list[str] = []
    find = store.meta.access.find_s3_credential

    def counted(access_key_id):
        reads.append(access_key_id)
        return find(access_key_id)

    monkeypatch.setattr(store.meta.access, "find_s3_credential", counted)
    return reads


def request(app, method: str, path: str, address: str, keys=None, body: bytes = b"", url: str | None = None):
    """One request from ``address``: signed with ``keys``, or as ``url`` (presigned) when given."""
    if url is not None:
        parts = urlsplit(url)
        return app.test_client().open(parts.path, method=method, query_string=parts.query, data=body,
                                      environ_base={"REMOTE_ADDR": address})
    headers = sign(method, f"http://localhost{path}", keys, body=body).headers if keys else {}
    return app.test_client().open(path, method=method, data=body, headers=headers, base_url="http://localhost",
                                  environ_base={"REMOTE_ADDR": address})


def code(response) -> str:
    text = response.get_data(as_text=True)
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else ""


def element(response, name: str) -> str | None:
    text = response.get_data(as_text=True)
    return text.split(f"<{name}>", 1)[1].split(f"</{name}>", 1)[0] if f"<{name}>" in text else None


# --- rate limits -------------------------------------------------------------------------------

def test_garbage_signed_with_a_real_key_id_does_not_spend_that_keys_budget(make_app, keys, address):
    app = make_app(s3_rate_limit="10 per minute", s3_failed_rate_limit="5 per minute")
    forged = (keys[0], "not-the-secret")
    answers = [request(app, "GET", "/", address, forged) for _ in range(30)]
    assert [code(r) for r in answers[:5]] == ["SignatureDoesNotMatch"] * 5
    assert {code(r) for r in answers[5:]} == {"SlowDown"}
    for client in (address, "192.0.2.7"):  # the key's owner, from the forger's address or another
        for _ in range(4):
            r = request(app, "GET", "/", client, keys)
            assert r.status_code == 200, r.get_data(as_text=True)


def test_verified_requests_still_count_against_their_key(make_app, keys, address):
    app = make_app(s3_rate_limit="3 per minute", s3_failed_rate_limit="5 per minute")
    answers = [request(app, "GET", "/", address, keys) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 503]
    assert code(answers[3]) == "SlowDown" and int(answers[3].headers["Retry-After"]) >= 1


def test_failed_requests_from_one_address_are_limited_after_the_failed_budget(make_app, address):
    app = make_app(s3_failed_rate_limit="5 per minute")
    invented = ("AKMS" + "Z" * 16, "secret")
    answers = [request(app, "GET", "/", address, invented) for _ in range(3)]
    answers += [request(app, "GET", "/bucket/key", address) for _ in range(2)]  # unsigned counts too
    assert [r.status_code for r in answers] == [403, 403, 403, 404, 404]  # no bucket named "bucket"
    over = request(app, "PUT", "/bucket/key", address, invented, body=b"x")
    assert over.status_code == 503 and code(over) == "SlowDown"
    assert 1 <= int(over.headers["Retry-After"]) <= 60 and over.headers["x-amz-request-id"]
    assert request(app, "GET", "/", address).status_code == 503
    elsewhere = request(app, "GET", "/", "198.51.100.9", invented)  # another address: its own budget
    assert elsewhere.status_code == 403 and code(elsewhere) == "InvalidAccessKeyId"


def test_an_unknown_key_id_costs_one_mongodb_read_per_cache_window(make_app, address, mongo_reads):
    app = make_app(s3_failed_rate_limit="1000 per minute")
    invented = ("AKMS" + "Q" * 16, "secret")
    for _ in range(20):
        r = request(app, "GET", "/", address, invented)
        assert code(r) == "InvalidAccessKeyId"
    assert mongo_reads.count(invented[0]) == 1


def test_a_key_created_under_a_remembered_unknown_id_works_at_once(make_app, store, address, monkeypatch):
    app = make_app()
    wanted = "AKMS" + "N" * 16
    assert code(request(app, "GET", "/", address, (wanted, "secret"))) == "InvalidAccessKeyId"  # remembered
    monkeypatch.setattr(credentials_module, "_new_access_key_id", lambda: wanted)
    _, secret = S3Credentials(store.meta, SECRET, Generation(store.redis)).create("acme")  # as `minis3 keys` does
    r = request(app, "GET", "/", address, (wanted, secret))
    assert r.status_code == 200, r.get_data(as_text=True)


def test_an_address_over_its_failed_budget_costs_no_mongodb_read(make_app, keys, address, mongo_reads):
    app = make_app(s3_failed_rate_limit="5 per minute")
    answers = [request(app, "GET", "/", address, (f"AKMS{i:016d}", "secret")) for i in range(20)]
    assert [code(r) for r in answers] == ["InvalidAccessKeyId"] * 5 + ["SlowDown"] * 15
    assert len(mongo_reads) == 5  # one per invented id until the budget ran out, none after


# --- presigned URLs ----------------------------------------------------------------------------

@pytest.mark.parametrize("expires, message", [
    ("604801", "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be "
               "less than 604800 seconds"),
    ("-1", "X-Amz-Expires must be non-negative"),
    ("soon", "X-Amz-Expires should be a number"),
    ("", "X-Amz-Expires should be a number"),
])
def test_an_out_of_range_x_amz_expires_is_refused_with_awss_message(make_app, keys, address, expires, message):
    app = make_app()
    r = request(app, "GET", "/", address, url=presign("GET", "http://localhost/bkt/key", keys, expires))
    assert r.status_code == 400 and code(r) == "AuthorizationQueryParametersError"
    assert element(r, "Message") == message


def test_a_week_is_the_longest_presigned_url_accepted(make_app, keys, address):
    app = make_app()
    assert request(app, "PUT", "/bkt", address, keys).status_code == 200
    assert request(app, "PUT", "/bkt/key", address, keys, body=b"week").status_code == 200
    r = request(app, "GET", "/", address, url=presign("GET", "http://localhost/bkt/key", keys, 604800))
    assert r.status_code == 200 and r.get_data() == b"week"


def test_an_expired_presigned_url_names_its_expiry_and_the_server_time(make_app, keys, address):
    app = make_app()
    signed_at = time.time() - 7200
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(signed_at))
    r = request(app, "GET", "/", address, url=presign("GET", "http://localhost/bkt/key", keys, 3600, stamp))
    assert r.status_code == 403 and code(r) == "AccessDenied"
    assert element(r, "Message") == "Request has expired"
    assert element(r, "X-Amz-Expires") == "3600"
    assert element(r, "Expires") == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(signed_at) + 3600))
    server_time = time.mktime(time.strptime(element(r, "ServerTime"), "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert abs(server_time - time.time()) < 120
    assert r.headers["x-amz-request-id"]


def sigv2_presign(method: str, path: str, keys, expires: int) -> str:
    to_sign = f"{method}\n\n\n{expires}\n{path}"
    signature = base64.b64encode(hmac.new(keys[1].encode(), to_sign.encode(), hashlib.sha1).digest()).decode()
    return (f"http://localhost{path}?AWSAccessKeyId={keys[0]}&Expires={expires}"
            f"&Signature={quote(signature, safe='')}")


def test_an_expired_sigv2_presigned_url_is_refused(make_app, keys, address):
    app = make_app()
    assert request(app, "PUT", "/bkt", address, keys).status_code == 200
    assert request(app, "PUT", "/bkt/key", address, keys, body=b"v2").status_code == 200
    fresh = request(app, "GET", "/", address, url=sigv2_presign("GET", "/bkt/key", keys, int(time.time()) + 60))
    assert fresh.status_code == 200 and fresh.get_data() == b"v2"  # the same signer, in time
    expired_at = int(time.time()) - 60
    r = request(app, "GET", "/", address, url=sigv2_presign("GET", "/bkt/key", keys, expired_at))
    assert r.status_code == 403 and code(r) == "AccessDenied" and element(r, "Message") == "Request has expired"
    assert element(r, "Expires") == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expired_at))
    assert element(r, "ServerTime") is not None
    bad = request(app, "GET", "/", address, url=sigv2_presign("GET", "/bkt/key", keys, 0).replace(
        "Expires=0", "Expires=tomorrow"))
    assert bad.status_code == 403 and code(bad) == "AccessDenied" and "seconds since epoch" in element(bad, "Message")


# --- anonymous requests ------------------------------------------------------------------------

def test_anonymous_requests_learn_only_whether_a_bucket_exists(make_app, keys, address):
    app = make_app()
    assert request(app, "PUT", "/private", address, keys).status_code == 200
    assert request(app, "PUT", "/private/there", address, keys, body=b"secret").status_code == 200
    expected = {
        ("GET", "/nowhere/key"): (404, "NoSuchBucket"),
        ("PUT", "/nowhere/key"): (404, "NoSuchBucket"),
        ("GET", "/nowhere"): (404, "NoSuchBucket"),
        ("GET", "/private/there"): (403, "AccessDenied"),
        ("GET", "/private/missing"): (403, "AccessDenied"),  # no s3:ListBucket: never NoSuchKey
        ("PUT", "/private/new"): (403, "AccessDenied"),
        ("GET", "/private"): (403, "AccessDenied"),
        ("GET", "/"): (403, "AccessDenied"),
        ("PUT", "/new-bucket"): (403, "AccessDenied"),  # anonymous CreateBucket
    }
    for (method, path), (status, error) in expected.items():
        r = request(app, method, path, address, body=b"x" if method == "PUT" else b"")
        assert (r.status_code, code(r)) == (status, error), (method, path, r.get_data(as_text=True))
        assert r.headers["x-amz-request-id"]
    assert code(request(app, "GET", "/nowhere/key", address)) == "NoSuchBucket"
    head = app.test_client().head("/private/there", environ_base={"REMOTE_ADDR": address})
    assert head.status_code == 403 and head.get_data() == b""


def test_a_zero_x_amz_expires_is_valid_and_already_expired(make_app, keys, address):
    """AWS reads 0 as a number in range and the URL as expired (403, not 400)."""
    app = make_app()
    r = request(app, "GET", "/", address, url=presign("GET", "http://localhost/bkt/key", keys, 0))
    assert r.status_code == 403 and element(r, "Message") == "Request has expired"
    assert element(r, "X-Amz-Expires") == "0"


def test_a_large_key_budget_is_counted_in_redis_a_share_at_a_time(settings):
    from app.s3.ratelimit import S3RateLimit
    from app.s3.errors import SlowDown

    limits = S3RateLimit("200 per minute", settings.redis_url)
    calls = []
    hit = limits.limiter.hit
    limits.limiter.hit = lambda item, who, cost=1: calls.append(cost) or hit(item, who, cost=cost)
    who = f"k{uuid.uuid4().hex}"
    for _ in range(10):
        limits.check(who)
    assert calls == [2] * 5  # a share of 200 // 100, taken from Redis once per two requests
    for _ in range(190):
        limits.check(who)
    with pytest.raises(SlowDown):
        limits.check(who)
