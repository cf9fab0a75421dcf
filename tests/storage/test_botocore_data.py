"""Every botocore session of a process reads botocore's data through one loader, which parses
each file once."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import botocore.config
import botocore.session
import pytest
from aiobotocore.session import get_session

from videojob.storage.botocore_data import sharing_data


def test_sessions_of_a_process_share_one_loader_and_what_it_parsed() -> None:
    first = sharing_data(botocore.session.get_session())
    second = sharing_data(get_session())
    loader = first.get_component("data_loader")
    assert second.get_component("data_loader") is loader
    model = loader.load_service_model("s3", "service-2")
    assert second.get_component("data_loader").load_service_model("s3", "service-2") is model


def test_a_client_of_a_sharing_session_signs_for_its_own_credentials() -> None:
    def signed_by(key: str) -> str:
        client: Any = sharing_data(botocore.session.get_session()).create_client(
            "s3",
            endpoint_url="http://127.0.0.1:9",
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key="secret",
            config=botocore.config.Config(signature_version="s3v4"),
        )
        url: str = client.generate_presigned_url("get_object", {"Bucket": "b", "Key": "k"})
        return parse_qs(urlsplit(url).query)["X-Amz-Credential"][0].split("/")[0]

    assert signed_by("one") == "one"
    assert signed_by("other") == "other"


def test_another_data_path_has_a_loader_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = sharing_data(botocore.session.get_session()).get_component("data_loader")
    monkeypatch.setenv("AWS_DATA_PATH", str(tmp_path))
    elsewhere = sharing_data(botocore.session.get_session()).get_component("data_loader")
    assert elsewhere is not default
    assert str(tmp_path) in elsewhere.search_paths
