"""Schemathesis hooks for .ci/schemathesis. Two things the tool cannot know
about this API, each handled as narrowly as the request and the response
allow. Neither changes what openapi.yaml says.

1. Keys are single-use. A request that reuses an `Idempotency-Key` with a
   different body is refused with `422 idempotency-key-reused` before the
   body is even read: that is the API's contract. Schemathesis draws few
   distinct short keys, so most schema-valid orders would collide with an
   earlier one and never reach the order validation this run is meant to
   exercise. So, just before a schema-valid (positive) case is sent, a key
   this run already used for a *different* order that got a 201 is
   swapped for a fresh, equally valid key. Retries of the *same* request
   keep their key (and get replays), and negative cases keep theirs (a
   collision there is one more rejection).

2. `cargo lambda watch` answers 500 itself, without calling the function,
   when a request header value is not UTF-8 (or has a control character),
   or when a body it forwards as text (`text/*` or `application/json`) is
   not UTF-8. That 500's body is `{"type": "https://httpstatuses.com/500",
   ...}` as `text/plain`, which the function never writes. Failures on such
   a response are dropped, and only when the request has such bytes. Behind
   API Gateway these requests reach the function, which answers them 4xx
   (tests/orders_api.rs sends it such events).

Each swap and each drop is written to $SCHEMATHESIS_DROPPED (if set), which
.ci/schemathesis sums up after the run.
"""

import itertools
import json
import os
import re

import schemathesis

WATCH_500_TYPE = "https://httpstatuses.com/500"

# Normalised Idempotency-Key -> the request (media type, body) that got a 201 with it.
FIRST_USE = {}
FRESH_KEYS = (f"schemathesis-fresh-{n}" for n in itertools.count(1))


def record(reason, detail):
    path = os.environ.get("SCHEMATHESIS_DROPPED")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(f"{reason}\t{detail}\n")


def wire_bytes(value):
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    return str(value).encode("latin-1", errors="replace")


def is_clean_text(raw):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in text)


def normalised_key(value):
    """The key as the function reads it: trimmed, the RFC 8941 quotes removed."""
    key = wire_bytes(value).decode("latin-1").strip(" \t")
    if len(key) >= 2 and key.startswith('"') and key.endswith('"'):
        key = re.sub(r'\\(["\\])', r"\1", key[1:-1])
    return key


def order_request(case):
    """What the function compares under one key: media type and body."""
    return (case.media_type, json.dumps(case.body, sort_keys=True, default=repr))


def is_order_post(case):
    return case.method.upper() == "POST" and case.path == "/orders"


@schemathesis.hook
def before_call(context, case, kwargs):
    if not is_order_post(case) or case.meta is None or not case.meta.generation.mode.is_positive:
        return
    header = case.headers.get("Idempotency-Key") if case.headers else None
    if header is None:
        return
    first = FIRST_USE.get(normalised_key(header))
    if first is not None and first != order_request(case):
        case.headers["Idempotency-Key"] = next(FRESH_KEYS)
        record("fresh-key", "a key this run used for another order")


@schemathesis.hook
def after_call(context, case, response):
    if is_order_post(case) and response.status_code == 201 and case.headers:
        header = case.headers.get("Idempotency-Key")
        if header is not None:
            FIRST_USE.setdefault(normalised_key(header), order_request(case))


def watch_answered_alone(response):
    """Case 2: watch's own 500 for a request it could not forward."""
    if response.status_code != 500:
        return False
    try:
        if json.loads(response.content).get("type") != WATCH_500_TYPE:
            return False
    except (ValueError, AttributeError):
        return False
    request = response.request
    headers_unreadable = any(not is_clean_text(wire_bytes(v)) for v in request.headers.values())
    content_type = wire_bytes(request.headers.get("Content-Type")).decode("latin-1").lower()
    as_text = content_type.startswith(("text/", "application/json"))
    body_unreadable = as_text and not is_clean_text(wire_bytes(request.body))
    return headers_unreadable or body_unreadable


@schemathesis.hook
def filter_failure(context, failure, case, response):
    if watch_answered_alone(response):
        record("watch-500", f"{failure.code} {response.request.method} {response.request.path_url}")
        return False
    return True
