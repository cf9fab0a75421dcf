"""Where files live: ``--media-root`` / ``--output-dir`` values, and the store's settings from
the AWS variables (pure: no store)."""

from __future__ import annotations

from pathlib import Path

import pytest

from videojob.flags import Flag, FlagError, FlagTable, location, store_public_endpoint_flag
from videojob.storage.location import (
    BadLocation,
    LocalDirectory,
    S3Location,
    parse_location,
)
from videojob.storage.settings import StoreSettings

TABLE = FlagTable(
    "python -m render_service",
    "RENDER_",
    "test",
    (
        Flag("--output-dir", location(), LocalDirectory(Path("var/renders")), "outputs"),
        store_public_endpoint_flag(),
    ),
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("./var/renders", LocalDirectory(Path("var/renders"))),
        ("/srv/media", LocalDirectory(Path("/srv/media"))),
        ("s3://videojob", S3Location("videojob", "")),
        ("s3://videojob/", S3Location("videojob", "")),
        ("s3://videojob/renders/", S3Location("videojob", "renders")),
        ("S3://my.bucket-1/a/b", S3Location("my.bucket-1", "a/b")),
    ],
)
def test_locations_are_read_from_a_directory_or_an_s3_url(raw: str, expected: object) -> None:
    assert parse_location(raw) == expected


def test_keys_are_named_under_the_prefix() -> None:
    renders = S3Location("videojob", "renders")

    assert renders.key_for("job-1/attempt-2.mp4") == "renders/job-1/attempt-2.mp4"
    assert S3Location("videojob").key_for("x.mp4") == "x.mp4"
    assert renders.url_of(renders.key_for("x.mp4")) == "s3://videojob/renders/x.mp4"
    assert str(renders) == "s3://videojob/renders"
    with pytest.raises(BadLocation):
        renders.key_for("../escape.mp4")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("s3://", "no bucket after s3://"),
        ("s3:///renders", "no bucket after s3://"),
        ("s3://Videojob/renders", "bucket 'Videojob' is not a valid S3 bucket name"),
        ("s3://ab", "bucket 'ab' is not a valid S3 bucket name"),
        ("s3://videojob/a//b", "prefix 'a//b': has an empty, '.' or '..' segment"),
        ("s3://videojob/a/../b", "prefix 'a/../b': has an empty, '.' or '..' segment"),
        ("gs://videojob/renders", "gs:// is not supported (only s3://)"),
        ("   ", "empty"),
    ],
)
def test_a_bad_location_is_refused_naming_the_flag_and_why(raw: str, why: str) -> None:
    with pytest.raises(FlagError) as refused:
        TABLE.parse(["--output-dir", raw], environ={})

    assert refused.value.message.startswith(
        f"--output-dir must be a directory or s3://BUCKET/PREFIX, not {raw!r}: {why}"
    )


def test_a_bad_location_from_the_environment_names_the_variable() -> None:
    with pytest.raises(FlagError) as refused:
        TABLE.parse([], environ={"RENDER_OUTPUT_DIR": "s3://Bad"})

    assert refused.value.message.startswith("--output-dir (from RENDER_OUTPUT_DIR) must be")


@pytest.mark.parametrize("raw", ["ftp://store", "store:8333", "http://", "http://h:99999"])
def test_the_public_endpoint_must_be_an_http_url(raw: str) -> None:
    with pytest.raises(FlagError, match=r"^--store-public-endpoint must be empty, or an http"):
        TABLE.parse(["--store-public-endpoint", raw], environ={})


def test_the_public_endpoint_comes_from_its_flag_or_variable() -> None:
    given = TABLE.parse([], environ={"RENDER_STORE_PUBLIC_ENDPOINT": "https://media.example"})

    assert given.store_public_endpoint == "https://media.example"
    assert TABLE.parse([], environ={}).store_public_endpoint == ""


def test_settings_come_from_the_aws_variables() -> None:
    settings = StoreSettings.from_environ(
        {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:8333",
            "AWS_ACCESS_KEY_ID": "key",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_REGION": "eu-west-3",
        },
        public_endpoint="https://media.example",
    )

    assert (settings.endpoint, settings.region) == ("http://127.0.0.1:8333", "eu-west-3")
    assert (settings.access_key, settings.secret_key) == ("key", "secret")
    assert settings.public_endpoint == "https://media.example"
    assert "secret" not in repr(settings)


def test_unset_or_empty_variables_leave_aws_s3_and_botocore_s_credential_chain() -> None:
    settings = StoreSettings.from_environ({"AWS_ENDPOINT_URL": "", "AWS_ACCESS_KEY_ID": ""})

    assert (settings.endpoint, settings.access_key, settings.secret_key) == (None, None, None)
    assert (settings.region, settings.public_endpoint) == ("us-east-1", None)
    assert settings.described_endpoint == "AWS S3 (us-east-1)"
