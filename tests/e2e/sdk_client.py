"""Drives pipeline-gateway with Feldera's own Python SDK.

Run by tests/python_sdk.rs against a gateway in front of the stand-in manager; the gateway's
URL is in FELDERA_HOST, an optional credential in FELDERA_API_KEY, and over https the file of
the CA to trust in FELDERA_CA (the SDK's `requests_verify`). Each check prints one
line; the last line is "N passed, M failed" and the exit code is non-zero on any failure.
"""

import os
import sys
import traceback

from feldera import FelderaClient, Pipeline
from feldera.rest.errors import FelderaAPIError, FelderaError

HOST = os.environ["FELDERA_HOST"]
API_KEY = os.environ.get("FELDERA_API_KEY") or None
CA = os.environ.get("FELDERA_CA") or None
# Which checks to run (comma-separated); all by default.
ONLY = set(filter(None, os.environ.get("SDK_CHECKS", "").split(",")))

_client = None


def client():
    """The SDK client, made on first use (its constructor already calls the API)."""
    global _client
    if _client is None:
        _client = FelderaClient(HOST, api_key=API_KEY, timeout=30, requests_verify=CA)
    return _client


def standby_pipeline_activates_to_running():
    pipeline = Pipeline.get("fresh", client())
    pipeline.start_standby(timeout_s=30)
    status = str(Pipeline.get("fresh", client()).status()).lower()
    assert "standby" in status, f"after start_standby: {status}"
    pipeline.activate(wait=True, timeout_s=30)
    status = str(Pipeline.get("fresh", client()).status()).lower()
    assert "running" in status, f"after activate: {status}"


def bad_name_is_rejected_with_feldera_error():
    try:
        client().activate_pipeline("-bad-", wait=False)
    except FelderaAPIError as error:
        assert error.status_code == 400, error.status_code
        assert error.error_code == "NameDoesNotMatchPattern", error.error_code
        assert error.details["name"] == "-bad-", error.details
        return
    raise AssertionError("activating '-bad-' did not raise FelderaAPIError")


def backs_off_on_429_and_then_succeeds():
    # The gateway admits one request per second in this run and the client's constructor
    # spent it: each call below is first answered 429 with Retry-After, which the SDK must
    # honour and retry (the Rust side checks the gateway's 429 count).
    for _ in range(2):
        assert Pipeline.get("live", client()).name == "live"


def unauthenticated_is_rejected():
    # Run without FELDERA_API_KEY against a gateway with authentication on.
    # The client's constructor already calls the API (GET /v0/config) and wraps the refusal.
    try:
        FelderaClient(HOST, timeout=30, requests_verify=CA)
    except FelderaAPIError as error:
        assert error.status_code == 401, error.status_code
        assert error.error_code == "AuthenticationFailed", error.error_code
        assert error.details["reason"] == "missing_credentials", error.details
        return
    except FelderaError as error:
        text = str(error)
        assert "Error Code: AuthenticationFailed" in text, text
        assert "missing_credentials" in text, text
        assert "Response Status: 401" in text, text
        return
    raise AssertionError("an unauthenticated request was not refused")


def _api_error(call):
    """The FelderaAPIError that `call` raises (anything else fails the check)."""
    try:
        call()
    except FelderaAPIError as error:
        return error
    raise AssertionError("the call did not raise FelderaAPIError")


def manager_errors_keep_their_codes():
    # The SDK's session sends `Accept-Encoding: gzip, deflate`, so the manager compresses its
    # errors: the gateway must judge them decoded and pass them on with their own codes.
    from feldera.enums import PipelineFieldSelector

    error = _api_error(lambda: client().get_pipeline("nope", PipelineFieldSelector.ALL))
    assert error.status_code == 404, error.status_code
    assert error.error_code == "UnknownPipelineName", (error.error_code, error.message)
    assert error.details == {"pipeline_name": "nope"}, error.details


def activate_is_an_enterprise_feature_on_oss():
    # Run against a stand-in playing the open-source edition.
    error = _api_error(lambda: client().activate_pipeline("orders", wait=False))
    assert error.status_code == 501, error.status_code
    assert error.error_code == "EnterpriseFeature", (error.error_code, error.message)
    assert "enterprise-only feature" in error.message, error.message


CHECKS = [
    manager_errors_keep_their_codes,
    activate_is_an_enterprise_feature_on_oss,
    standby_pipeline_activates_to_running,
    bad_name_is_rejected_with_feldera_error,
    backs_off_on_429_and_then_succeeds,
    unauthenticated_is_rejected,
]

passed = failed = 0
for check in CHECKS:
    if ONLY and check.__name__ not in ONLY:
        continue
    try:
        check()
        passed += 1
        print(f"ok   {check.__name__}")
    except Exception:  # noqa: BLE001 - every failure is reported
        failed += 1
        print(f"FAIL {check.__name__}")
        traceback.print_exc()
print(f"sdk: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
