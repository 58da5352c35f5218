"""Listing details clients rely on: object owners (V2 `fetch-owner=true`,
always in V1) and V1's `encoding-type=url`, which encodes keys, markers and
the delimiter but not the prefix (botocore decodes only those)."""

import xml.etree.ElementTree as ET

import requests

from conftest import xml_find_all, xml_text


def test_owners_in_listings(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    plain = s3.list_objects_v2(Bucket=bucket)["Contents"][0]
    assert "Owner" not in plain
    owned = s3.list_objects_v2(Bucket=bucket, FetchOwner=True)["Contents"][0]
    assert owned["Owner"]["ID"]
    v1 = s3.list_objects(Bucket=bucket)["Contents"][0]
    assert v1["Owner"]["ID"] == owned["Owner"]["ID"]
    assert s3.list_buckets()["Owner"]["ID"] == owned["Owner"]["ID"]


def test_v1_url_encoding_leaves_the_prefix_as_given(cluster, s3, bucket):
    for key in ("dir one/a b", "dir one/sub dir/c", "other"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    # botocore asks for encoding-type=url itself and decodes what V1 encodes.
    page = s3.list_objects(Bucket=bucket, Prefix="dir one/", Delimiter="/", MaxKeys=1)
    assert page["Prefix"] == "dir one/"
    assert [o["Key"] for o in page["Contents"]] == ["dir one/a b"]
    assert page["NextMarker"] == "dir one/a b"
    rest = s3.list_objects(Bucket=bucket, Prefix="dir one/", Delimiter="/", Marker=page["NextMarker"])
    assert [p["Prefix"] for p in rest["CommonPrefixes"]] == ["dir one/sub dir/"]
    assert rest["Marker"] == "dir one/a b"
    # On the wire: the prefix as given, keys and markers encoded.
    raw = requests.get(
        f"{cluster.s3_endpoint}/{bucket}?prefix=dir%20one/&encoding-type=url&marker=dir%20one/a",
        timeout=30,
    )
    root = ET.fromstring(raw.content)
    assert xml_text(root, "{ns}Prefix") == "dir one/"
    assert xml_text(root, "{ns}Marker") == "dir%20one/a"
    assert [e.text for e in xml_find_all(root, "{ns}Contents/{ns}Key")] == ["dir%20one/a%20b", "dir%20one/sub%20dir/c"]
    # V2 encodes its prefix, and botocore decodes it.
    v2 = s3.list_objects_v2(Bucket=bucket, Prefix="dir one/")
    assert v2["Prefix"] == "dir one/"
