"""The phone webhook: what Parley answers when Twilio tells it a call came in.

A Twilio number's voice webhook (`POST /twilio/voice`) gets TwiML that connects the call to a
bidirectional Media Stream on `/twilio/media` (voice/transports/twilio.py). With an auth token
configured, the webhook first checks Twilio's `X-Twilio-Signature`: HMAC-SHA1, keyed with the
account's auth token, over the URL Twilio called followed by every POST parameter, sorted by name,
as name and value with nothing between (Twilio's documented scheme, in "Webhooks security").

The media socket itself carries no signature Parley can check, so with a token the webhook also
puts a per-call stream token in the TwiML (a `<Parameter>` of the `<Stream>`: HMAC-SHA256 of the
call's CallSid, keyed with the auth token). Twilio hands it back in the stream's `start`
message, and `/twilio/media` refuses a stream without the right one: only calls the signed
webhook answered get a conversation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape, quoteattr

MEDIA_PATH = "/twilio/media"
VOICE_PATH = "/twilio/voice"
SIGNATURE_HEADER = "X-Twilio-Signature"
TWIML_MEDIA_TYPE = "text/xml"
# Said by Twilio when every conversation slot is taken, or the models are not loaded yet: better
# than a call that connects to nothing.
BUSY_MESSAGE = "Sorry, all our lines are busy right now. Please call again in a few minutes."
# A Host header is a name or an address, with a port: anything else would end up inside the
# TwiML's stream URL.
HOST_PATTERN = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
DEFAULT_PORTS = {"http": 80, "https": 443}
# The `<Stream>` parameter that carries the per-call stream token (Twilio returns it in `start`).
STREAM_TOKEN_PARAMETER = "parley_stream_token"


class WebhookError(Exception):
    """The webhook cannot answer this request: `status` and a message that says what to do."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def twilio_signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """Twilio's request signature: base64(HMAC-SHA1(token, url + each sorted name and value))."""
    data = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def stream_token(auth_token: str, call_sid: str) -> str:
    """The token that lets this call's media stream in: HMAC-SHA256(auth token, call SID)."""
    return hmac.new(auth_token.encode(), f"parley-stream:{call_sid}".encode(), hashlib.sha256).hexdigest()


def stream_token_ok(auth_token: str, call_sid: str, custom_parameters: dict[str, str]) -> bool:
    """Whether a stream's `start` carries the token the webhook gave its call."""
    given = custom_parameters.get(STREAM_TOKEN_PARAMETER, "")
    return hmac.compare_digest(given.encode(), stream_token(auth_token, call_sid).encode())


def _with_and_without_default_port(url: str) -> list[str]:
    """Twilio signs the URL as configured; a proxy may add or drop the scheme's default port."""
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    if parts.port is None and default is not None:
        other = parts._replace(netloc=f"{host}:{default}")
    elif parts.port == default:
        other = parts._replace(netloc=host)
    else:
        return [url]
    return [url, urlunsplit(other)]


def check_signature(auth_token: str, signature: str | None, url: str, params: list[tuple[str, str]]) -> None:
    """Raise WebhookError (403) unless `signature` is Twilio's for this URL and these parameters."""
    if not signature:
        raise WebhookError(
            403,
            f"Refused: no {SIGNATURE_HEADER} header. This endpoint answers only Twilio's signed requests "
            "(PARLEY_TWILIO_AUTH_TOKEN is set).",
        )
    for candidate in _with_and_without_default_port(url):
        if hmac.compare_digest(twilio_signature(auth_token, candidate, params), signature):
            return
    raise WebhookError(
        403,
        f"Refused: {SIGNATURE_HEADER} does not match. It was checked against {url}: set PARLEY_PUBLIC_URL "
        "to the address configured in Twilio if a proxy sits in between, and PARLEY_TWILIO_AUTH_TOKEN to "
        "this account's auth token.",
    )


def signed_url(public_url: str, request_url: str) -> str:
    """The URL Twilio signed: the request's path and query under the public address, if one is set."""
    if not public_url:
        return request_url
    request = urlsplit(request_url)
    public = urlsplit(public_url)
    return urlunsplit(public._replace(path=public.path.rstrip("/") + request.path, query=request.query))


def stream_url(public_url: str, host_header: str | None) -> str:
    """Where Twilio should open the media stream: wss on the request's host, or ws/wss under the
    public address (http gives ws, for a simulator or a local test; Twilio itself needs wss)."""
    if public_url:
        public = urlsplit(public_url)
        scheme = "wss" if public.scheme == "https" else "ws"
        return urlunsplit((scheme, public.netloc, public.path.rstrip("/") + MEDIA_PATH, "", ""))
    if not host_header or not HOST_PATTERN.match(host_header):
        raise WebhookError(
            400,
            f"Cannot tell where the media stream should connect: the Host header is {host_header!r}. "
            "Set PARLEY_PUBLIC_URL to the address Twilio reaches this server at.",
        )
    return f"wss://{host_header}{MEDIA_PATH}"


def connect_stream_twiml(url: str, parameters: dict[str, str] | None = None) -> str:
    """TwiML that connects the call to a bidirectional Media Stream at `url`, with `parameters`
    (Twilio returns them in the stream's `start`)."""
    inner = "".join(
        f"<Parameter name={quoteattr(name)} value={quoteattr(value)}/>"
        for name, value in (parameters or {}).items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Connect><Stream url={quoteattr(url)}>{inner}</Stream></Connect></Response>"
    )


def busy_twiml() -> str:
    """TwiML that tells the caller to call back, and hangs up."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Say>{escape(BUSY_MESSAGE)}</Say><Hangup/></Response>"
    )
