"""The SASL logins that need more than strings: OAUTHBEARER's token, GSSAPI's and AWS_MSK_IAM's
libraries, AWS_MSK_IAM's region.

kafka-python asks a token provider for a token at every login (every new connection, and every
re-authentication a broker asks for, KIP-368), so a token read from a file is read again each
time and whatever renews the file needs no restart here. A token from an OAuth 2 endpoint (the
client-credentials grant, as Kafka's own OIDC login does it) is kept until 80% of its lifetime
is past. Either is fetched once when a client is made, on the caller's thread: a file that
cannot be read or an endpoint that refuses is one line at start, not a connection that fails
over and over inside the client.

kafka-python's AWS_MSK_IAM takes its region only from botocore's configuration; the one
per-client slot it passes to a login mechanism is the token provider's, so the region goes
there (``MskRegion``) and a subclass of its mechanism reads it.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka.net.sasl import register_sasl_mechanism
from kafka.net.sasl.msk import SaslMechanismAwsMskIam
from kafka.net.sasl.oauth import AbstractTokenProvider

from detector.errors import DetectorError, MissingExtra
from detector.settings.kafka import KafkaSettings

#: A token from an endpoint serves until this share of its lifetime has passed (Kafka's
#: ``sasl.login.refresh.window.factor``).
REFRESH_AT = 0.8
TIMEOUT_S = 10.0

#: The optional modules of some mechanisms: (module, extra of pyproject.toml).
EXTRAS = {"GSSAPI": ("gssapi", "kerberos"), "AWS_MSK_IAM": ("botocore", "aws")}


class TokenUnavailable(DetectorError):
    """No OAUTHBEARER token to log in with; the message is one line."""


class TokenFile(AbstractTokenProvider):
    """The token in a file, read again at every login."""

    def __init__(self, path: str):
        self.path = path

    def token(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise TokenUnavailable(f"cannot read the OAUTHBEARER token file {self.path} "
                                   f"({exc.strerror or exc})") from exc
        if not token:
            raise TokenUnavailable(f"the OAUTHBEARER token file {self.path} is empty")
        return token


class ClientCredentials(AbstractTokenProvider):
    """Tokens from an OAuth 2 endpoint (client-credentials grant, the client's id and secret
    in HTTP basic authentication as RFC 6749 has it), each kept until ``REFRESH_AT`` of its
    lifetime (``expires_in``, else the JWT's ``exp``); without either, one per login."""

    def __init__(self, url: str, client_id: str, secret: str, scope: str | None = None,
                 clock: Callable[[], float] = time.time):
        self.url, self.scope = url, scope
        pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}"
        self._authorization = "Basic " + base64.b64encode(pair.encode()).decode()
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._renew_at = 0.0

    def token(self) -> str:
        with self._lock:
            if not self._token or self._clock() >= self._renew_at:
                self._token, lifetime = self._fetch()
                self._renew_at = self._clock() + REFRESH_AT * lifetime
            return self._token

    def _fetch(self) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", **({"scope": self.scope} if self.scope
                                                        else {})}
        request = urllib.request.Request(
            self.url, data=urllib.parse.urlencode(form).encode(), method="POST",
            headers={"Authorization": self._authorization, "Accept": "application/json",
                     "Content-Type": "application/x-www-form-urlencoded"})
        where = f"the OAuth token endpoint {self.url}"
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            answer = f"HTTP {exc.code}{_oauth_error(exc)}"
            if exc.code in (400, 401, 403):  # RFC 6749 5.2: invalid_client, ...
                raise TokenUnavailable(f"{where} refused the client credentials ({answer}); "
                                       "check --sasl-username and --sasl-password") from exc
            raise TokenUnavailable(f"{where} failed ({answer})") from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TokenUnavailable(f"cannot reach {where} ({reason})") from exc
        except ValueError as exc:
            raise TokenUnavailable(f"{where} did not answer JSON") from exc
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise TokenUnavailable(f"{where} answered without an access_token")
        lifetime = body.get("expires_in")
        if not isinstance(lifetime, int | float):
            lifetime = _jwt_expiry(token) - self._clock()
        return token, max(0.0, float(lifetime))


def _oauth_error(exc: urllib.error.HTTPError) -> str:
    """``: invalid_client`` from an OAuth error body (RFC 6749 5.2), or nothing."""
    try:
        error = json.loads(exc.read()).get("error")
    except (ValueError, AttributeError, OSError):
        return ""
    return f": {error}" if isinstance(error, str) else ""


def _jwt_expiry(token: str) -> float:
    """A JWT's ``exp`` (not verified: only to know when to fetch the next), or 0."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return 0.0


@dataclass(frozen=True)
class MskRegion:
    """AWS_MSK_IAM's region, in the token provider's slot of kafka-python's client options."""

    region: str


class MskIam(SaslMechanismAwsMskIam):
    """kafka-python's AWS_MSK_IAM, signing for the region of the settings."""

    def __init__(self, **config: Any):
        super().__init__(**config)
        given = config.get("sasl_oauth_token_provider")
        if isinstance(given, MskRegion):
            session = self._boto_session_cls

            def with_region() -> Any:
                made = session()
                made.set_config_variable("region", given.region)
                return made

            self._boto_session_cls = with_region


register_sasl_mechanism("AWS_MSK_IAM", MskIam, overwrite=True)


@functools.cache
def _endpoint(url: str, client_id: str, secret: str, scope: str | None) -> ClientCredentials:
    """One provider per endpoint and client, shared by the process's clients."""
    return ClientCredentials(url, client_id, secret, scope)


def options(kafka: KafkaSettings) -> dict[str, Any]:
    """kafka-python's options for the login that are not strings. MissingExtra (one line)
    when the mechanism's library is not installed; TokenUnavailable when there is no token."""
    if not kafka.security_protocol.startswith("SASL"):
        return {}
    mechanism = kafka.sasl_mechanism
    if mechanism in EXTRAS:
        module, extra = EXTRAS[mechanism]
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(f"--sasl-mechanism {mechanism}", module, extra)
    if mechanism == "AWS_MSK_IAM":
        return {"sasl_oauth_token_provider": MskRegion(kafka.sasl_aws_region or "")}
    if mechanism != "OAUTHBEARER":
        return {}
    provider: AbstractTokenProvider
    if kafka.sasl_oauth_token_file:
        provider = TokenFile(kafka.sasl_oauth_token_file)
    else:
        provider = _endpoint(kafka.sasl_oauth_token_url or "", kafka.sasl_username or "",
                             kafka.sasl_password or "", kafka.sasl_oauth_scope)
    provider.token()  # here, once: no token is one line now, not failed logins later
    return {"sasl_oauth_token_provider": provider}


def login_hint(kafka: KafkaSettings) -> str:
    """What to check when the broker refuses this login."""
    return {
        "OAUTHBEARER": "check the token (--sasl-oauth-token-file or --sasl-oauth-token-url): "
                       "is it expired, or not one the brokers accept?",
        "GSSAPI": "check the Kerberos ticket (kinit, or a keytab in KRB5_CLIENT_KTNAME) and "
                  "--sasl-kerberos-service-name",
        "AWS_MSK_IAM": "check the AWS credentials, --sasl-aws-region and the IAM policy",
    }.get(kafka.sasl_mechanism, "check --sasl-mechanism, --sasl-username and --sasl-password")
