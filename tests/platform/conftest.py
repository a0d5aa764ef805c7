"""Fixtures of the platform tests: runs of the real Pulumi program under mocks (platform_harness)."""
import pytest

from platform_harness import run_program

APP_OFF_URL = "https://cp.example.com/"


@pytest.fixture(scope="session")
def full_run():
    """A stack that deploys the control-plane to fly.io (the default)."""
    return run_program()


@pytest.fixture(scope="session")
def app_off_run():
    """A stack whose owner runs `fly deploy` themselves."""
    return run_program(
        {"differential:deployApp": "false", "differential:controlPlaneUrl": APP_OFF_URL},
        remove=("differential:flyApp",),
    )
