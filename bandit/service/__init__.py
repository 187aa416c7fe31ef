"""The HTTP decision service: a FastAPI app over one in-process :class:`~bandit.engine.Engine`.

Bodies are validated by the strict models of :mod:`bandit.models` at the edge; the engine checks
what only it knows (campaign names, context schema). Every 4xx answer has the same shape,
``{"error": {"code", "message", "field"?, "errors"?}}``, and every status a route can answer is
declared in the OpenAPI document:

- 400 ``malformed_body``: the body is not JSON as the service reads it, whatever the route: a
  syntax error or nesting deeper than 200 (named by line and column), not UTF-8 (UTF-16, a byte
  order mark), or a key repeated in an object (JSON readers keep one of them silently);
- 401 / 403: management routes, when a token is configured (``api_token``), and ``POST
  /v1/events`` when an ingest token is (``ingest_token``): missing or malformed header / wrong
  token;
- 404 ``not_found``: unknown campaign or slot (``unknown_arm``: the arm the path names); a
  campaign named in a body too, events included (the whole batch is refused);
- 405 ``method_not_allowed``: a method the path does not have;
- 409 ``conflict``: the campaign or arm exists, or the arm is a default or a slot's last;
- 408 ``request_timeout``: the headers did not arrive within ``header_timeout_s`` or the body
  within ``body_timeout_s`` (answered by the server, which then closes the connection:
  ``deadline_protocol``);
- 413 ``payload_too_large``: the body exceeds ``max_body_bytes``, or a batch decision body has
  more than ``max_batch_rows`` requests (a JSON one more than 100,000), refused while it
  arrives;
- 415 ``unsupported_media_type``: a body on the events or decision routes whose Content-Type
  is not ``application/json`` (or ``application/x-ndjson`` where the route takes it): a web
  page cannot post JSON to another site without the browser asking first, but it can post
  ``text/plain``;
- 422 ``invalid_input``: valid JSON that breaks the schema (each error's location and reason), a
  context the campaign does not accept, ``NaN`` or ``Infinity`` (Python's JSON reader takes these
  tokens, so they are refused by value, as non-finite numbers);
- 503 ``unavailable``: not ready yet; retry. ``over_capacity``: the events would leave more
  than ``max_pending`` decisions of a campaign waiting for their attribution windows; nothing
  of the request was recorded; retry after ``Retry-After`` seconds, once windows have closed
  (a 503, not a 429: the limit is the service's, shared by every sender, not one client's
  rate). Counted in ``cmab_pending_refused_total`` by campaign.

``POST /v1/decisions/batch`` and ``POST /v1/events`` also take ``application/x-ndjson`` (one
object per line); a bad line is a 422 that names its line number.
"""

from __future__ import annotations

from bandit.service.app import create_app, tune_gc
from bandit.service.link import Link, LinkFactory
from bandit.service.openapi import EXAMPLE_CAMPAIGN
from bandit.service.reading import NDJSON
from bandit.service.routes.decisions import BATCH_CHUNK

__all__ = ["BATCH_CHUNK", "EXAMPLE_CAMPAIGN", "NDJSON", "Link", "LinkFactory", "create_app",
           "tune_gc"]
