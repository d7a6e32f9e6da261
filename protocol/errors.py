"""The one exception the codec raises: it carries what the server needs to answer (RFC 6733 §7.5)."""

from __future__ import annotations


class DiameterError(Exception):
    """A protocol error with its Result-Code and the AVP(s) that belong inside Failed-AVP.

    ``fatal`` means the byte stream cannot be resynchronised: the server must close the connection.
    ``failed_avp`` holds encoded AVP bytes (not the Failed-AVP wrapper), or None.
    """

    __slots__ = ("failed_avp", "fatal", "result_code")

    def __init__(
        self, result_code: int, message: str, failed_avp: bytes | None = None, fatal: bool = False
    ) -> None:
        super().__init__(message)
        self.result_code = result_code
        self.failed_avp = failed_avp
        self.fatal = fatal

    def __repr__(self) -> str:
        return f"DiameterError({self.result_code}, {str(self)!r}, fatal={self.fatal})"
