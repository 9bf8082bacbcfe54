"""The one error type of the web API: an HTTP status and a sentence naming the problem."""

from __future__ import annotations


class ApiError(Exception):
    """A request the server cannot answer; sent as `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message
