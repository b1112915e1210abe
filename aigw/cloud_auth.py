"""Credentials for the cloud providers, applied to a built request just before it is sent.

The adapters are pure and build unsigned requests; this edge adds what needs
credentials, a clock or I/O:

* ``bedrock``: AWS Signature Version 4 by botocore's ``SigV4Auth`` (service
  ``bedrock``, the provider's ``region``), with credentials from botocore's
  default chain: environment (``AWS_ACCESS_KEY_ID`` …), shared config and
  credentials files (``AWS_PROFILE``), web identity, container and EC2
  instance roles.  Refreshable credentials (roles) are refreshed by botocore.
  A provider ``api_key`` is a Bedrock API key and is sent as
  ``Authorization: Bearer`` instead of signing.
* ``vertex``: an OAuth 2 access token from google-auth: a service-account key
  (``credentials_file`` or ``credentials_json``) or Application Default
  Credentials.  The token is cached per provider and refreshed by google-auth
  once it is within its refresh margin of expiry (one refresh at a time).

Failures raise :class:`CredentialsError`; its message never carries key
material.  Nothing here logs.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from aigw.providers.registry import AWS_SIGV4, GOOGLE_OAUTH, PROVIDERS
from aigw.types import ProviderConfig, UpstreamRequest

__all__ = ["CredentialsError", "authorize", "reset", "set_vertex_credentials",
           "set_aws_credentials"]

VERTEX_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


class CredentialsError(Exception):
    """No usable credentials (the message names the provider, never a secret)."""


_lock = threading.Lock()
_aws: dict[str, Any] = {}      # provider key -> botocore Credentials, or retry-after time
_google: dict[str, Any] = {}   # provider key -> google.auth Credentials
_google_locks: dict[str, threading.Lock] = {}
_aws_factory: Callable[[], Any] | None = None
_google_request: Any = None


def _key(p: ProviderConfig) -> str:
    return (f"{p.name}\0{p.type}\0{p.region}\0{p.project}\0{p.credentials_file}\0"
            f"{hash(p.credentials_json)}")


def reset() -> None:
    """Forget cached credentials (config reloads and tests)."""
    global _aws_factory
    with _lock:
        _aws.clear()
        _google.clear()
        _google_locks.clear()
        _aws_factory = None


def set_aws_credentials(factory: Callable[[], Any] | None) -> None:
    """Tests: replace botocore's credential chain by ``factory()``."""
    global _aws_factory
    with _lock:
        _aws_factory = factory
        _aws.clear()


def set_vertex_credentials(provider: ProviderConfig, credentials: Any) -> None:
    """Inject a google-auth credentials object for one provider (tests, embedding)."""
    with _lock:
        _google[_key(provider)] = credentials


def authorize(provider: ProviderConfig, req: UpstreamRequest) -> UpstreamRequest:
    auth = PROVIDERS[provider.type].auth if provider.type in PROVIDERS else None
    if auth == AWS_SIGV4:
        return _bedrock(provider, req)
    if auth == GOOGLE_OAUTH:
        return _vertex(provider, req)
    return req


# -- AWS ----------------------------------------------------------------------

NEGATIVE_TTL = 10.0  # seconds a failed credential lookup is remembered


def _aws_credentials(provider: ProviderConfig) -> Any:
    key = _key(provider)
    with _lock:
        creds = _aws.get(key)
        factory = _aws_factory
    if isinstance(creds, float):  # a recent lookup found nothing: do not probe IMDS per request
        if time.monotonic() < creds:
            raise CredentialsError(f"provider '{provider.name}': no AWS credentials found "
                                   "(environment, shared files or instance role)")
        creds = None
    if creds is None:
        if factory is not None:
            creds = factory()
        else:
            import botocore.session  # noqa: PLC0415 (optional: cloud SDK)
            creds = botocore.session.get_session().get_credentials()
        if creds is None:
            with _lock:
                _aws[key] = time.monotonic() + NEGATIVE_TTL
            raise CredentialsError(f"provider '{provider.name}': no AWS credentials found "
                                   "(environment, shared files or instance role)")
        with _lock:
            _aws[key] = creds
    return creds


def _bedrock(provider: ProviderConfig, req: UpstreamRequest) -> UpstreamRequest:
    headers = dict(req.headers)
    if provider.api_key:
        headers["authorization"] = "Bearer " + provider.api_key
        return UpstreamRequest(req.method, req.url, headers, req.body)
    from botocore.auth import SigV4Auth  # noqa: PLC0415 (optional: cloud SDK)
    from botocore.awsrequest import AWSRequest  # noqa: PLC0415 (optional: cloud SDK)
    from botocore.exceptions import BotoCoreError  # noqa: PLC0415 (optional: cloud SDK)
    try:
        frozen = _aws_credentials(provider).get_frozen_credentials()
    except CredentialsError:
        raise
    except (BotoCoreError, OSError, ValueError) as exc:
        raise CredentialsError(f"provider '{provider.name}': AWS credentials could not be "
                               f"loaded ({type(exc).__name__})") from None
    aws = AWSRequest(method=req.method, url=req.url, data=req.body or b"", headers=headers)
    SigV4Auth(frozen, "bedrock", provider.region or "us-east-1").add_auth(aws)
    return UpstreamRequest(req.method, req.url, {k.lower(): v for k, v in aws.headers.items()},
                           req.body)


# -- Google -------------------------------------------------------------------

def _load_google(provider: ProviderConfig) -> Any:
    import google.auth  # noqa: PLC0415 (optional: cloud SDK)
    from google.oauth2 import service_account  # noqa: PLC0415 (optional: cloud SDK)
    if provider.credentials_file:
        return service_account.Credentials.from_service_account_file(
            provider.credentials_file, scopes=VERTEX_SCOPES)
    if provider.credentials_json:
        info = orjson.loads(provider.credentials_json)
        return service_account.Credentials.from_service_account_info(info, scopes=VERTEX_SCOPES)
    creds, _ = google.auth.default(scopes=VERTEX_SCOPES)
    return creds


def _transport(timeout: float) -> Any:
    """google-auth's requests transport, with a bound: its own default waits 120 s."""
    global _google_request
    if _google_request is None:
        import google.auth.transport.requests  # noqa: PLC0415 (optional: cloud SDK)
        _google_request = google.auth.transport.requests.Request()
    base_request = _google_request

    def request(url: str, method: str = "GET", body: Any = None, headers: Any = None,
                timeout: float | None = timeout, **kwargs: Any) -> Any:
        return base_request(url, method=method, body=body, headers=headers, timeout=timeout,
                            **kwargs)
    return request


def _vertex(provider: ProviderConfig, req: UpstreamRequest) -> UpstreamRequest:
    import google.auth.exceptions  # noqa: PLC0415 (optional: cloud SDK)
    key = _key(provider)
    with _lock:
        creds = _google.get(key)
        lock = _google_locks.setdefault(key, threading.Lock())
    try:
        if creds is None:
            with lock:
                with _lock:
                    creds = _google.get(key)
                if creds is None:
                    creds = _load_google(provider)
                    with _lock:
                        _google[key] = creds
        if not creds.valid:
            with lock:  # one refresh per provider at a time; the others wait for its token
                if not creds.valid:
                    creds.refresh(_transport(provider.connect_timeout
                                             + provider.first_byte_timeout))
        token = creds.token
    except (google.auth.exceptions.GoogleAuthError, OSError, ValueError, KeyError,
            orjson.JSONDecodeError) as exc:
        raise CredentialsError(f"provider '{provider.name}': Google credentials could not be "
                               f"obtained ({type(exc).__name__})") from None
    if not token:
        raise CredentialsError(f"provider '{provider.name}': Google credentials gave no token")
    headers = dict(req.headers)
    headers["authorization"] = "Bearer " + token
    return UpstreamRequest(req.method, req.url, headers, req.body)
