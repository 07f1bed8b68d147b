"""Every async test runs twice, on asyncio and on trio, both on virtual time."""

from __future__ import annotations

from typing import Any

import pytest

from throttlekit.testing import backend_options


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return backend_options(request.param)
