"""The one error taxonomy of the data plane, mapped to HTTP status in one place.

Every failure the engine or a component can answer with a status is a ``ProxyError``
subclass carrying that status and a short, plain-text reason. Nothing else decides a
status for an error: ``error_body`` builds the bytes that go on the wire. Bodies follow
Go's ``http.Error`` convention (the message plus one newline) unless a subclass sets
``newline = False``, because Knative's clients and probes compare some bodies byte for byte.
"""

from __future__ import annotations


class ProxyError(Exception):
    """A failure that maps to one HTTP status with a short plain-text body."""

    status: int = 500
    newline: bool = True
    #: Whether the connection must be closed after answering (framing is no longer trusted).
    close: bool = False

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason

    def body(self) -> bytes:
        text = self.reason + ("\n" if self.newline else "")
        return text.encode("utf-8", "replace")


class BadRequest(ProxyError):
    status = 400
    close = True


class NotFound(ProxyError):
    status = 404


class MethodNotAllowed(ProxyError):
    """A method the proxy does not carry (``CONNECT``: no tunnels to arbitrary hosts)."""

    status = 405
    close = True


class ExpectationFailed(ProxyError):
    status = 417
    close = True


class PayloadTooLarge(ProxyError):
    status = 413
    close = True


class UriTooLong(ProxyError):
    status = 414
    close = True


class HeadersTooLarge(ProxyError):
    status = 431
    close = True


class NotImplementedCoding(ProxyError):
    status = 501
    close = True


class VersionNotSupported(ProxyError):
    """A request line naming an HTTP major version other than 1 (``HTTP/2.0``)."""

    status = 505
    close = True


class BadGateway(ProxyError):
    """The upstream refused, reset, timed out dialing, or sent a malformed response."""

    status = 502


class ServiceUnavailable(ProxyError):
    status = 503


class QueueFull(ServiceUnavailable):
    """A breaker had no admission slot left (Knative: ``pending request queue full``)."""

    def __init__(self, reason: str = "pending request queue full") -> None:
        super().__init__(reason)


class RequestTimeout(ProxyError):
    """The client took too long to send a request head."""

    status = 408
    close = True


class GatewayTimeout(ProxyError):
    """A timeout fired before the first response byte (Knative: ``request timeout``)."""

    status = 504
    newline = False

    def __init__(self, reason: str = "request timeout") -> None:
        super().__init__(reason)


STATUS_PHRASES: dict[int, bytes] = {
    100: b"Continue",
    101: b"Switching Protocols",
    103: b"Early Hints",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    204: b"No Content",
    206: b"Partial Content",
    301: b"Moved Permanently",
    302: b"Found",
    304: b"Not Modified",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    408: b"Request Timeout",
    413: b"Content Too Large",
    414: b"URI Too Long",
    417: b"Expectation Failed",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


def reason_phrase(status: int) -> bytes:
    return STATUS_PHRASES.get(status, b"Unknown")
