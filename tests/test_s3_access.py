"""Who may do what, through boto3 against gunicorn + celery worker: two tenants (acme owns the
buckets, globex is another account) and an anonymous client (unsigned). Canned ACLs, grants by
header and by XML body, bucket policies (Allow, Deny, principals, prefixes, s3:prefix and
aws:SourceIp conditions), MalformedPolicy, GetBucketPolicyStatus, and the ACLs of copies and
multipart uploads. Each case asserts what the client sees: the status, the error code, the bytes."""
from __future__ import annotations

import json
import os
import subprocess

import boto3
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from pipeline.namespace.objects import name_id
from tests.s3clients import REGION, boto3_client
from tests.stack import BIN, MiB, random_bytes

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"


@pytest.fixture(scope="module")
def acme(s3_stack, s3_keys):
    return boto3_client(s3_stack, s3_keys)


@pytest.fixture(scope="module")
def globex(s3_stack):
    return boto3_client(s3_stack, s3_stack.s3_credentials("globex"))


@pytest.fixture(scope="module")
def anonymous(s3_stack):
    return boto3.client("s3", endpoint_url=s3_stack.s3_url, region_name=REGION,
                        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}))


def refused(call, **kwargs) -> tuple[str, int]:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    err = info.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


def body(client, bucket: str, key: str) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def grants(answer: dict) -> set[tuple[str, str]]:
    return {(g["Grantee"].get("ID") or g["Grantee"].get("URI"), g["Permission"]) for g in answer["Grants"]}


def policy(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def test_a_private_bucket_is_refused_to_others_and_unknown_buckets_are_no_such_bucket(acme, globex, anonymous):
    acme.create_bucket(Bucket="private-one")
    acme.put_object(Bucket="private-one", Key="secret", Body=b"s3cret")
    for client in (globex, anonymous):
        assert refused(client.get_object, Bucket="private-one", Key="secret") == ("AccessDenied", 403)
        assert refused(client.get_object, Bucket="private-one", Key="missing") == ("AccessDenied", 403)
        assert refused(client.list_objects_v2, Bucket="private-one") == ("AccessDenied", 403)
        assert refused(client.put_object, Bucket="private-one", Key="x", Body=b"x") == ("AccessDenied", 403)
        assert refused(client.get_bucket_acl, Bucket="private-one") == ("AccessDenied", 403)
        assert refused(client.get_object, Bucket="no-such-one", Key="k") == ("NoSuchBucket", 404)
    assert refused(anonymous.list_buckets) == ("AccessDenied", 403)
    assert refused(anonymous.create_bucket, Bucket="anon-made") == ("AccessDenied", 403)
    assert body(acme, "private-one", "secret") == b"s3cret"


def test_get_acl_answers_the_owner_with_full_control_by_default(acme):
    acme.create_bucket(Bucket="acl-default")
    acme.put_object(Bucket="acl-default", Key="k", Body=b"v")
    for answer in (acme.get_bucket_acl(Bucket="acl-default"), acme.get_object_acl(Bucket="acl-default", Key="k")):
        assert answer["Owner"]["ID"] == "acme"
        assert grants(answer) == {("acme", "FULL_CONTROL")}


def test_a_public_read_bucket_lists_to_anyone_but_its_objects_stay_private(acme, anonymous, globex):
    acme.create_bucket(Bucket="public-list", ACL="public-read")
    acme.put_object(Bucket="public-list", Key="private.txt", Body=b"mine")
    acme.put_object(Bucket="public-list", Key="shared.txt", Body=b"everyone", ACL="public-read")
    assert grants(acme.get_bucket_acl(Bucket="public-list")) == {("acme", "FULL_CONTROL"), (ALL_USERS, "READ")}
    listed = anonymous.list_objects_v2(Bucket="public-list")
    assert [o["Key"] for o in listed["Contents"]] == ["private.txt", "shared.txt"]
    assert anonymous.head_bucket(Bucket="public-list")["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert body(anonymous, "public-list", "shared.txt") == b"everyone"
    assert body(globex, "public-list", "shared.txt") == b"everyone"
    assert refused(anonymous.get_object, Bucket="public-list", Key="private.txt") == ("AccessDenied", 403)
    assert refused(anonymous.put_object, Bucket="public-list", Key="new", Body=b"x") == ("AccessDenied", 403)
    assert grants(acme.get_object_acl(Bucket="public-list", Key="shared.txt")) == {
        ("acme", "FULL_CONTROL"), (ALL_USERS, "READ")}


def test_a_public_read_write_bucket_takes_anonymous_uploads(acme, anonymous):
    acme.create_bucket(Bucket="dropbox")
    acme.put_bucket_acl(Bucket="dropbox", ACL="public-read-write")
    anonymous.put_object(Bucket="dropbox", Key="from-anyone", Body=b"anonymous bytes")
    assert body(acme, "dropbox", "from-anyone") == b"anonymous bytes"
    anonymous.delete_object(Bucket="dropbox", Key="from-anyone")
    assert refused(acme.head_object, Bucket="dropbox", Key="from-anyone")[1] == 404


def test_a_grant_by_canonical_id_header_and_by_xml_body(acme, globex):
    acme.create_bucket(Bucket="shared-with-globex")
    acme.put_object(Bucket="shared-with-globex", Key="report", Body=b"numbers")
    assert refused(globex.list_objects_v2, Bucket="shared-with-globex") == ("AccessDenied", 403)
    acme.put_bucket_acl(Bucket="shared-with-globex", GrantRead='id="globex"', GrantFullControl='id="acme"')
    assert [o["Key"] for o in globex.list_objects_v2(Bucket="shared-with-globex")["Contents"]] == ["report"]
    assert refused(globex.get_object, Bucket="shared-with-globex", Key="report") == ("AccessDenied", 403)
    assert refused(globex.put_object, Bucket="shared-with-globex", Key="x", Body=b"x") == ("AccessDenied", 403)
    acme.put_object_acl(Bucket="shared-with-globex", Key="report", AccessControlPolicy={
        "Owner": {"ID": "acme"},
        "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": "acme"}, "Permission": "FULL_CONTROL"},
                   {"Grantee": {"Type": "CanonicalUser", "ID": "globex"}, "Permission": "READ"}]})
    assert body(globex, "shared-with-globex", "report") == b"numbers"
    assert grants(acme.get_object_acl(Bucket="shared-with-globex", Key="report")) == {
        ("acme", "FULL_CONTROL"), ("globex", "READ")}
    assert refused(globex.get_object_acl, Bucket="shared-with-globex", Key="report") == ("AccessDenied", 403)


def test_a_policy_allows_another_tenant_under_a_prefix_only(acme, globex, anonymous):
    acme.create_bucket(Bucket="by-policy")
    acme.put_object(Bucket="by-policy", Key="pub/a", Body=b"public a")
    acme.put_object(Bucket="by-policy", Key="priv/b", Body=b"private b")
    acme.put_bucket_policy(Bucket="by-policy", Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::globex:root"}, "Action": "s3:GetObject",
         "Resource": "arn:aws:s3:::by-policy/pub/*"},
        {"Effect": "Allow", "Principal": {"AWS": ["globex"]}, "Action": "s3:ListBucket",
         "Resource": "arn:aws:s3:::by-policy", "Condition": {"StringLike": {"s3:prefix": "pub/*"}}}))
    assert body(globex, "by-policy", "pub/a") == b"public a"
    assert refused(globex.get_object, Bucket="by-policy", Key="priv/b") == ("AccessDenied", 403)
    assert refused(anonymous.get_object, Bucket="by-policy", Key="pub/a") == ("AccessDenied", 403)
    assert [o["Key"] for o in globex.list_objects_v2(Bucket="by-policy", Prefix="pub/")["Contents"]] == ["pub/a"]
    assert refused(globex.list_objects_v2, Bucket="by-policy", Prefix="priv/") == ("AccessDenied", 403)
    assert refused(globex.list_objects_v2, Bucket="by-policy") == ("AccessDenied", 403)


def test_an_explicit_deny_beats_a_public_acl_and_the_owner(acme, anonymous):
    acme.create_bucket(Bucket="denied")
    acme.put_object(Bucket="denied", Key="open", Body=b"open", ACL="public-read")
    acme.put_object(Bucket="denied", Key="locked/x", Body=b"locked", ACL="public-read")
    acme.put_bucket_policy(Bucket="denied", Policy=policy(
        {"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::denied/locked/*"}))
    assert body(anonymous, "denied", "open") == b"open"
    assert refused(anonymous.get_object, Bucket="denied", Key="locked/x") == ("AccessDenied", 403)
    assert refused(acme.get_object, Bucket="denied", Key="locked/x") == ("AccessDenied", 403)
    acme.delete_bucket_policy(Bucket="denied")  # the owner keeps its policy
    assert body(acme, "denied", "locked/x") == b"locked"
    assert body(anonymous, "denied", "locked/x") == b"locked"


@pytest.mark.parametrize("network, allowed", [("127.0.0.1/32", True), ("10.0.0.0/8", False)])
def test_a_source_ip_condition(acme, anonymous, network, allowed):
    bucket = "by-address-" + ("yes" if allowed else "no")
    acme.create_bucket(Bucket=bucket)
    acme.put_object(Bucket=bucket, Key="k", Body=b"from here")
    acme.put_bucket_policy(Bucket=bucket, Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{bucket}/*"], "Condition": {"IpAddress": {"aws:SourceIp": network}}}))
    if allowed:
        assert body(anonymous, bucket, "k") == b"from here"
    else:
        assert refused(anonymous.get_object, Bucket=bucket, Key="k") == ("AccessDenied", 403)


def test_policy_round_trip_and_status(acme, globex):
    acme.create_bucket(Bucket="with-policy")
    assert refused(acme.get_bucket_policy, Bucket="with-policy") == ("NoSuchBucketPolicy", 404)
    # without a policy the status answers from the ACLs (private here)
    assert acme.get_bucket_policy_status(Bucket="with-policy")["PolicyStatus"]["IsPublic"] is False
    public = policy({"Sid": "read", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
                     "Resource": "arn:aws:s3:::with-policy/*"})
    acme.put_bucket_policy(Bucket="with-policy", Policy=public)
    assert acme.get_bucket_policy(Bucket="with-policy")["Policy"] == public
    assert acme.get_bucket_policy_status(Bucket="with-policy")["PolicyStatus"]["IsPublic"] is True
    assert refused(globex.get_bucket_policy, Bucket="with-policy") == ("AccessDenied", 403)
    acme.put_bucket_policy(Bucket="with-policy", Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": "globex"}, "Action": "s3:*", "Resource": "arn:aws:s3:::with-policy/*"}))
    assert acme.get_bucket_policy_status(Bucket="with-policy")["PolicyStatus"]["IsPublic"] is False
    acme.delete_bucket_policy(Bucket="with-policy")
    assert refused(acme.get_bucket_policy, Bucket="with-policy") == ("NoSuchBucketPolicy", 404)


GOOD = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::strict/*"}


@pytest.mark.parametrize("document, message", [
    ("not json", "Policies must be valid JSON and the first byte must be '{'"),
    ('{"Statement": [', "This policy contains invalid Json"),
    (json.dumps({"Version": "2012-10-17"}), "Missing required field Statement"),
    (policy({k: v for k, v in GOOD.items() if k != "Principal"}), "Missing required field Principal"),
    (policy({**GOOD, "Effect": "Perhaps"}), "Invalid effect: Perhaps"),
    (policy({**GOOD, "Principal": {"AWS": "arn:aws:iam::bad name:root"}}), "Invalid principal in policy"),
    (policy({**GOOD, "Action": "s3:Teleport"}), "Policy has invalid action"),
    (policy({**GOOD, "Resource": "arn:aws:s3:::another-bucket/*"}), "Policy has invalid resource"),
    (policy({**GOOD, "Resource": "arn:aws:s3:::strict"}), "Action does not apply to any resource(s) in statement"),
    (policy({**GOOD, "Condition": {"StringEquals": {"aws:Nonsense": "x"}}}), "Policy has an invalid condition key"),
    (policy({**GOOD, "NotAction": "s3:PutObject"}), "Unknown field NotAction"),
])
def test_malformed_policies_are_refused_with_s3s_message(acme, document, message):
    acme.create_bucket(Bucket="strict")
    with pytest.raises(ClientError) as info:
        acme.put_bucket_policy(Bucket="strict", Policy=document)
    err = info.value.response
    assert (err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]) == ("MalformedPolicy", 400)
    assert err["Error"]["Message"] == message
    assert refused(acme.get_bucket_policy, Bucket="strict") == ("NoSuchBucketPolicy", 404)


def test_a_copy_takes_the_acl_of_its_request_never_the_sources(s3_stack, acme, anonymous):
    acme.create_bucket(Bucket="copies")
    acme.put_object(Bucket="copies", Key="src", Body=b"copied bytes", ACL="public-read")
    acme.copy_object(Bucket="copies", Key="plain", CopySource="copies/src")
    acme.copy_object(Bucket="copies", Key="public", CopySource="copies/src", ACL="public-read")
    assert refused(anonymous.get_object, Bucket="copies", Key="plain") == ("AccessDenied", 403)
    assert body(anonymous, "copies", "public") == b"copied bytes"
    with s3_stack.metadata() as meta:
        assert meta.namespace.get_object_name(name_id("copies", "plain"))["acl"] is None
        assert meta.namespace.get_object_name(name_id("copies", "public"))["acl"]["grants"] == [
            ["acme", "FULL_CONTROL"], [ALL_USERS, "READ"]]


def test_a_multipart_upload_keeps_its_acl_until_completion(acme, anonymous):
    acme.create_bucket(Bucket="mp-acl")
    data = random_bytes(5 * MiB + 11, seed=1818)
    upload = acme.create_multipart_upload(Bucket="mp-acl", Key="big", ACL="public-read")
    part = acme.upload_part(Bucket="mp-acl", Key="big", UploadId=upload["UploadId"], PartNumber=1, Body=data)
    acme.complete_multipart_upload(Bucket="mp-acl", Key="big", UploadId=upload["UploadId"], MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]})
    assert body(anonymous, "mp-acl", "big") == data


def test_an_overwrite_without_acl_makes_the_object_private_again(acme, anonymous):
    acme.create_bucket(Bucket="rewritten")
    acme.put_object(Bucket="rewritten", Key="k", Body=b"v1", ACL="public-read")
    assert body(anonymous, "rewritten", "k") == b"v1"
    acme.put_object(Bucket="rewritten", Key="k", Body=b"v2")
    assert refused(anonymous.get_object, Bucket="rewritten", Key="k") == ("AccessDenied", 403)


def test_bad_acl_requests(acme):
    acme.create_bucket(Bucket="acl-errors")
    assert refused(acme.put_bucket_acl, Bucket="acl-errors", ACL="public-read",
                   GrantRead='id="globex"') == ("InvalidRequest", 400)
    assert refused(acme.put_object, Bucket="acl-errors", Key="k", Body=b"x",
                   GrantRead='uri="http://example.com/nobody"') == ("InvalidArgument", 400)
    assert refused(acme.put_bucket_acl, Bucket="acl-errors", AccessControlPolicy={
        "Owner": {"ID": "acme"}, "Grants": [{"Grantee": {"Type": "CanonicalUser", "ID": "acme"},
                                             "Permission": "EVERYTHING"}]}) == ("MalformedACLError", 400)


def test_delete_objects_decides_each_key(acme, globex):
    acme.create_bucket(Bucket="bulk-delete")
    for key in ("tmp/a", "keep/b"):
        acme.put_object(Bucket="bulk-delete", Key=key, Body=b"x")
    acme.put_bucket_policy(Bucket="bulk-delete", Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": "globex"}, "Action": "s3:DeleteObject",
         "Resource": "arn:aws:s3:::bulk-delete/tmp/*"}))
    answer = globex.delete_objects(Bucket="bulk-delete", Delete={"Objects": [{"Key": "tmp/a"}, {"Key": "keep/b"}]})
    assert [d["Key"] for d in answer["Deleted"]] == ["tmp/a"]
    assert [(e["Key"], e["Code"]) for e in answer["Errors"]] == [("keep/b", "AccessDenied")]
    assert [o["Key"] for o in acme.list_objects_v2(Bucket="bulk-delete")["Contents"]] == ["keep/b"]


def test_a_tenant_copies_from_a_bucket_it_may_read_into_its_own(acme, globex):
    acme.create_bucket(Bucket="copy-source")
    acme.put_object(Bucket="copy-source", Key="open", Body=b"readable", ACL="public-read")
    acme.put_object(Bucket="copy-source", Key="closed", Body=b"private")
    globex.create_bucket(Bucket="globex-copies")
    globex.copy_object(Bucket="globex-copies", Key="mine", CopySource="copy-source/open")
    assert body(globex, "globex-copies", "mine") == b"readable"
    assert refused(globex.copy_object, Bucket="globex-copies", Key="nope",
                   CopySource="copy-source/closed") == ("AccessDenied", 403)
    assert refused(acme.get_object, Bucket="globex-copies", Key="mine") == ("AccessDenied", 403)


def test_aws_cli_acls_and_policy_then_a_plain_curl_reads_what_is_public(s3_stack, s3_keys, tmp_path):
    env = {**os.environ, "AWS_ACCESS_KEY_ID": s3_keys[0], "AWS_SECRET_ACCESS_KEY": s3_keys[1],
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_CONFIG_FILE": str(tmp_path / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"), "HOME": str(tmp_path)}
    page = tmp_path / "index.html"
    page.write_bytes(b"<h1>public</h1>")

    def aws(*args: str) -> str:
        done = subprocess.run([str(BIN / "aws"), "--endpoint-url", s3_stack.s3_url, "s3api", *args], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def curl(path: str) -> tuple[str, bytes]:
        done = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", s3_stack.s3_url + path],
                              capture_output=True, timeout=60)
        content, _, status = done.stdout.rpartition(b"\n")
        return status.decode(), content

    aws("create-bucket", "--bucket", "site", "--acl", "public-read")
    aws("put-object", "--bucket", "site", "--key", "index.html", "--body", str(page), "--acl", "public-read")
    aws("put-object", "--bucket", "site", "--key", "draft.html", "--body", str(page))
    assert curl("/site/index.html") == ("200", b"<h1>public</h1>")
    status, content = curl("/site/draft.html")
    assert status == "403" and b"<Code>AccessDenied</Code>" in content
    status, content = curl("/site?list-type=2")
    assert status == "200" and b"<Key>draft.html</Key>" in content
    aws("put-bucket-acl", "--bucket", "site", "--grant-read", "id=globex", "--grant-full-control", "id=acme")
    acl = json.loads(aws("get-bucket-acl", "--bucket", "site"))
    assert {(g["Grantee"]["ID"], g["Permission"]) for g in acl["Grants"]} == {("globex", "READ"),
                                                                                ("acme", "FULL_CONTROL")}
    assert curl("/site?list-type=2")[0] == "403"
    aws("put-bucket-policy", "--bucket", "site", "--policy", policy(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::site/*"}))
    assert json.loads(aws("get-bucket-policy-status", "--bucket", "site"))["PolicyStatus"]["IsPublic"] is True
    assert curl("/site/draft.html") == ("200", b"<h1>public</h1>")


def test_a_missing_key_is_no_such_key_only_to_who_may_list(acme, anonymous):
    acme.create_bucket(Bucket="listable")
    acme.put_bucket_acl(Bucket="listable", ACL="public-read")
    assert refused(anonymous.get_object, Bucket="listable", Key="missing") == ("NoSuchKey", 404)
    assert refused(anonymous.head_object, Bucket="listable", Key="missing")[1] == 404
    acme.put_bucket_acl(Bucket="listable", ACL="private")
    assert refused(anonymous.get_object, Bucket="listable", Key="missing") == ("AccessDenied", 403)
    assert refused(acme.put_bucket_acl, Bucket="listable", ACL="everyone-everything") == ("InvalidArgument", 400)


def test_a_browser_form_upload_needs_write_permission_and_sets_its_acl(acme, globex, anonymous):
    import requests

    acme.create_bucket(Bucket="forms")
    form = acme.generate_presigned_post("forms", "up/${filename}", Fields={"acl": "public-read"},
                                        Conditions=[{"acl": "public-read"}, ["starts-with", "$key", "up/"]])
    r = requests.post(form["url"], data=form["fields"], files={"file": ("cat.txt", b"meow")}, timeout=30)
    assert r.status_code == 204, r.text
    assert body(anonymous, "forms", "up/cat.txt") == b"meow"
    theirs = globex.generate_presigned_post("forms", "up/${filename}")
    r = requests.post(theirs["url"], data=theirs["fields"], files={"file": ("dog.txt", b"woof")}, timeout=30)
    assert r.status_code == 403 and "<Code>AccessDenied</Code>" in r.text


def test_grants_list_the_groups_first_then_the_owner(acme):
    acme.create_bucket(Bucket="grant-order", ACL="public-read")
    listed = acme.get_bucket_acl(Bucket="grant-order")["Grants"]
    assert [(g["Grantee"]["Type"], g["Permission"]) for g in listed] == [("Group", "READ"),
                                                                         ("CanonicalUser", "FULL_CONTROL")]
    assert refused(acme.put_bucket_acl, Bucket="grant-order", GrantRead="emailAddress=nobody@example.com") == (
        "UnresolvableGrantByEmailAddress", 400)
    assert refused(acme.put_bucket_acl, Bucket="grant-order", GrantRead="id=_not-a-tenant") == ("InvalidArgument", 400)


def test_public_access_block_round_trip_and_enforcement(acme, globex, anonymous):
    acme.create_bucket(Bucket="blocked")
    assert refused(acme.get_public_access_block, Bucket="blocked") == ("NoSuchPublicAccessBlockConfiguration", 404)
    acme.put_object(Bucket="blocked", Key="k", Body=b"v", ACL="public-read")
    acme.put_bucket_policy(Bucket="blocked", Policy=policy(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::blocked/p/*"}))
    acme.put_object(Bucket="blocked", Key="p/k", Body=b"pv")
    assert body(anonymous, "blocked", "k") == b"v" and body(anonymous, "blocked", "p/k") == b"pv"
    conf = {"BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True}
    acme.put_public_access_block(Bucket="blocked", PublicAccessBlockConfiguration=conf)
    assert acme.get_public_access_block(Bucket="blocked")["PublicAccessBlockConfiguration"] == conf
    # IgnorePublicAcls and RestrictPublicBuckets: the public grant and the public policy count for nothing
    assert refused(anonymous.get_object, Bucket="blocked", Key="k") == ("AccessDenied", 403)
    assert refused(anonymous.get_object, Bucket="blocked", Key="p/k") == ("AccessDenied", 403)
    assert body(acme, "blocked", "p/k") == b"pv"
    assert acme.get_bucket_policy_status(Bucket="blocked")["PolicyStatus"]["IsPublic"] is False
    # BlockPublicAcls and BlockPublicPolicy: public ones are refused, private ones still taken
    assert refused(acme.put_object, Bucket="blocked", Key="x", Body=b"x", ACL="public-read")[1] == 403
    assert refused(acme.put_bucket_acl, Bucket="blocked", ACL="authenticated-read")[1] == 403
    assert refused(acme.put_bucket_policy, Bucket="blocked", Policy=policy(
        {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::blocked/*"}))[1] == 403
    acme.put_bucket_policy(Bucket="blocked", Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": "globex"}, "Action": "s3:GetObject", "Resource": "arn:aws:s3:::blocked/*"}))
    assert body(globex, "blocked", "k") == b"v"
    acme.put_object(Bucket="blocked", Key="y", Body=b"y", ACL="private")
    assert refused(globex.get_public_access_block, Bucket="blocked") == ("AccessDenied", 403)
    assert acme.delete_public_access_block(Bucket="blocked")["ResponseMetadata"]["HTTPStatusCode"] == 204
    assert body(anonymous, "blocked", "k") == b"v"


def test_ownership_controls_decide_who_owns_another_tenants_object(acme, globex):
    acme.create_bucket(Bucket="owned-by-writer", ACL="public-read-write")
    assert refused(acme.get_bucket_ownership_controls, Bucket="owned-by-writer") == (
        "OwnershipControlsNotFoundError", 404)
    globex.put_object(Bucket="owned-by-writer", Key="theirs", Body=b"g")
    assert globex.get_object_acl(Bucket="owned-by-writer", Key="theirs")["Owner"]["ID"] == "globex"
    # the bucket owner reads it only through the object's ACL (AWS's ObjectWriter)
    assert refused(acme.get_object_acl, Bucket="owned-by-writer", Key="theirs") == ("AccessDenied", 403)
    globex.put_object(Bucket="owned-by-writer", Key="shared", Body=b"s", ACL="bucket-owner-read")
    assert body(acme, "owned-by-writer", "shared") == b"s"
    # BucketOwnerEnforced needs a private bucket ACL, then disables ACLs
    rules = {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    assert refused(acme.put_bucket_ownership_controls, Bucket="owned-by-writer", OwnershipControls=rules) == (
        "InvalidBucketAclWithObjectOwnership", 400)
    acme.create_bucket(Bucket="enforced", ObjectOwnership="BucketOwnerEnforced")
    assert acme.get_bucket_ownership_controls(Bucket="enforced")["OwnershipControls"] == rules
    acme.put_bucket_policy(Bucket="enforced", Policy=policy(
        {"Effect": "Allow", "Principal": {"AWS": "globex"}, "Action": "s3:PutObject", "Resource": "arn:aws:s3:::enforced/*"}))
    globex.put_object(Bucket="enforced", Key="k", Body=b"v", ACL="bucket-owner-full-control")
    assert acme.get_object_acl(Bucket="enforced", Key="k")["Owner"]["ID"] == "acme"
    assert refused(globex.put_object, Bucket="enforced", Key="k2", Body=b"v", ACL="private") == (
        "AccessControlListNotSupported", 400)
    assert refused(acme.put_bucket_acl, Bucket="enforced", ACL="private") == ("AccessControlListNotSupported", 400)
    acme.create_bucket(Bucket="preferred", ObjectOwnership="BucketOwnerPreferred", ACL="public-read-write")
    globex.put_object(Bucket="preferred", Key="given", Body=b"v", ACL="bucket-owner-full-control")
    globex.put_object(Bucket="preferred", Key="kept", Body=b"v")
    assert acme.get_object_acl(Bucket="preferred", Key="given")["Owner"]["ID"] == "acme"
    assert globex.get_object_acl(Bucket="preferred", Key="kept")["Owner"]["ID"] == "globex"
    acme.delete_bucket_ownership_controls(Bucket="preferred")
    assert refused(acme.get_bucket_ownership_controls, Bucket="preferred")[1] == 404


def test_policy_conditions_on_tags_copy_source_and_acl_headers(acme, globex):
    acme.create_bucket(Bucket="conditions")
    acme.put_object(Bucket="conditions", Key="open", Body=b"o", Tagging="security=public")
    acme.put_object(Bucket="conditions", Key="closed", Body=b"c", Tagging="security=private")
    acme.put_object(Bucket="conditions", Key="public/src", Body=b"s")
    acme.put_bucket_policy(Bucket="conditions", Policy=policy(
        {"Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:GetObjectTagging"],
         "Resource": "arn:aws:s3:::conditions/*",
         "Condition": {"StringEquals": {"s3:ExistingObjectTag/security": "public"}}},
        {"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::conditions/tagged/*",
         "Condition": {"StringEquals": {"s3:RequestObjectTag/security": "public"}}},
        {"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::conditions/acl/*",
         "Condition": {"StringLikeIfExists": {"s3:x-amz-acl": "bucket-owner-*"}}},
        {"Effect": "Allow", "Principal": "*", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::conditions/copy/*",
         "Condition": {"StringLike": {"s3:x-amz-copy-source": "conditions/public/*"}}}))
    assert body(globex, "conditions", "open") == b"o"
    assert globex.get_object_tagging(Bucket="conditions", Key="open")["TagSet"] == [
        {"Key": "security", "Value": "public"}]
    assert refused(globex.get_object, Bucket="conditions", Key="closed") == ("AccessDenied", 403)
    globex.put_object(Bucket="conditions", Key="tagged/a", Body=b"a", Tagging="security=public")
    assert refused(globex.put_object, Bucket="conditions", Key="tagged/b", Body=b"b")[1] == 403
    globex.put_object(Bucket="conditions", Key="acl/a", Body=b"a")  # ...IfExists: no header is fine
    globex.put_object(Bucket="conditions", Key="acl/b", Body=b"b", ACL="bucket-owner-read")
    assert refused(globex.put_object, Bucket="conditions", Key="acl/c", Body=b"c", ACL="public-read")[1] == 403
    acme.put_object_acl(Bucket="conditions", Key="public/src", ACL="authenticated-read")
    globex.copy_object(Bucket="conditions", Key="copy/a", CopySource={"Bucket": "conditions", "Key": "public/src"})
    assert refused(globex.copy_object, Bucket="conditions", Key="copy/b",
                   CopySource={"Bucket": "conditions", "Key": "open"})[1] == 403


def test_expected_bucket_owner_and_upload_initiators(acme, globex):
    acme.create_bucket(Bucket="expected", ACL="public-read-write")
    acme.list_objects_v2(Bucket="expected", ExpectedBucketOwner="acme")
    assert refused(acme.list_objects_v2, Bucket="expected", ExpectedBucketOwner="globex") == ("AccessDenied", 403)
    assert refused(globex.put_object, Bucket="expected", Key="k", Body=b"v", ExpectedBucketOwner="nobody") == (
        "AccessDenied", 403)
    mine = acme.create_multipart_upload(Bucket="expected", Key="a")["UploadId"]
    theirs = globex.create_multipart_upload(Bucket="expected", Key="b")["UploadId"]
    uploads = acme.list_multipart_uploads(Bucket="expected")["Uploads"]
    assert [(u["Key"], u["Initiator"]["ID"], u["Owner"]["ID"]) for u in uploads] == [("a", "acme", "acme"),
                                                                                    ("b", "globex", "globex")]
    assert globex.list_parts(Bucket="expected", Key="b", UploadId=theirs)["Owner"]["ID"] == "globex"
    acme.abort_multipart_upload(Bucket="expected", Key="a", UploadId=mine)
    globex.abort_multipart_upload(Bucket="expected", Key="b", UploadId=theirs)
