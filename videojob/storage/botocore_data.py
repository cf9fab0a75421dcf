"""botocore's data files (the S3 service model, the endpoint rules: about a megabyte of JSON),
parsed once per process and shared by every botocore or aiobotocore session it opens. Each new
session parses them for itself otherwise: some 60 ms of CPU for every store opened."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from botocore.loaders import Loader
    from botocore.session import Session

SessionT = TypeVar("SessionT", bound="Session")


def sharing_data(session: SessionT) -> SessionT:
    """``session``, reading botocore's data through this process's one loader (whose cache
    keeps what it parsed) for its data path (``AWS_DATA_PATH``)."""
    session.register_component("data_loader", _loader(session.get_config_variable("data_path")))
    return session


@functools.cache
def _loader(data_path: str | None) -> Loader:
    from botocore.loaders import create_loader

    return create_loader(data_path)
