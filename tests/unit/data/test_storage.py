"""open_fs: an S3 endpoint set in the environment is the one used, also when it changes."""

from __future__ import annotations

from hypernym.data.storage import open_fs


def test_the_s3_endpoint_follows_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9001")
    first, path = open_fs("s3://bucket/ds/shard.tar")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9002")
    second, _ = open_fs("s3://bucket/ds/shard.tar")
    assert path == "bucket/ds/shard.tar"
    assert first.endpoint_url == "http://127.0.0.1:9001"
    assert second.endpoint_url == "http://127.0.0.1:9002"  # not fsspec's cached first instance
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9003")  # boto's S3-only name
    assert open_fs("s3://bucket/x")[0].endpoint_url == "http://127.0.0.1:9003"
