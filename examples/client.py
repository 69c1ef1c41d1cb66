#!/usr/bin/env python3
"""Place one order with POST /orders, retrying safely until it is answered.

The whole trick is the Idempotency-Key: one key is made for the order and
sent with every try, so however many tries reach the API, at most one order
is created, and every successful try answers the same order.

A try is repeated, with the same key and the same body, when
- it timed out or the connection failed (the order may or may not exist:
  the next try either creates it or gets the first answer back);
- the answer is 409 (the first try is still being processed) or 503 (the
  store was unavailable), after the answer's Retry-After or the backoff
  (0.2 s, doubling on every try), whichever is longer.
Anything else is final. Tries are bounded (--tries, default 10), and so is
each wait (--max-wait): the default keeps trying for over 40 s, far longer
than the 3 s lease that frees a key after any single fault.

Python standard library only.

    python3 examples/client.py --url http://localhost:9000/lambda-url/idempotent-orders \\
        --product "Espresso beans 1kg" --quantity 2

Against the deployed stack, send the caller's credentials with every try:
--bearer TOKEN (AuthMode jwt: `Authorization: Bearer TOKEN`), or any header
with --header 'Name: value' (repeatable). Without them the API's first
answer is a final 401.

Prints the final answer's body on stdout. Exit status: 0 for a 2xx, 1 for
another final answer, 2 when every try failed. --log prints one JSON line
per try on stderr (try, key, status or error, replayed, wait, body).
"""

import argparse
import email.utils
import http.client
import json
import re
import sys
import time
import urllib.error
import urllib.request
import uuid

RETRY_STATUSES = (409, 503)

# Headers the client sets itself, and what to use instead of --header.
OWN_HEADERS = {
    "idempotency-key": "use --key",
    "content-type": "the body is always JSON",
}
# An HTTP field name (RFC 9110 token).
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class Answer:
    """One HTTP answer: status, headers (lower-case names) and body."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {name.lower(): value for name, value in headers.items()}
        self.body = body

    def header(self, name):
        return self.headers.get(name.lower())


def post(url, key, body, timeout, headers=None):
    """One try, with the extra `headers` (a dict). Returns an Answer, or
    raises OSError / HTTPException."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Accept": "application/json, application/problem+json",
            **(headers or {}),
            "Content-Type": "application/json",
            "Idempotency-Key": key,
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        # A 4xx or 5xx is an answer, not a failure to get one.
        return Answer(error.code, dict(error.headers or {}), error.read())


def retry_after(answer, now=time.time):
    """Seconds the answer asks to wait (delta-seconds or an HTTP date), or None."""
    value = answer.header("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def create_order(
    base_url,
    order,
    key=None,
    tries=10,
    timeout=5.0,
    backoff=0.2,
    max_wait=10.0,
    on_try=None,
    sleep=time.sleep,
    headers=None,
):
    """Sends `order` (a dict) to POST {base_url}/orders until it is answered.

    Returns (answer, key); answer is None when every try failed. `on_try`,
    if given, is called with a dict describing each try. `headers` (a dict,
    e.g. Authorization) go with every try.
    """
    key = key or str(uuid.uuid4())
    url = base_url.rstrip("/") + "/orders"
    body = json.dumps(order).encode("utf-8")
    answer = None
    for attempt in range(1, tries + 1):
        report = {"try": attempt, "key": key}
        try:
            answer = post(url, key, body, timeout, headers)
        except (OSError, http.client.HTTPException) as error:
            # Timeouts, refused and reset connections: the order may exist.
            answer = None
            report["error"] = type(error).__name__ + ": " + str(error)
            wait = backoff
        else:
            report["status"] = answer.status
            report["replayed"] = answer.header("idempotent-replayed") == "true"
            report["body"] = answer.body.decode("utf-8", errors="replace")
            if answer.status not in RETRY_STATUSES:
                if on_try:
                    on_try(report)
                return answer, key
            # Retry-After is a floor, not the whole wait: a 409 near the
            # end of the first try's lease says 0, and retrying at once
            # would spend every try within that last second.
            asked = retry_after(answer)
            wait = backoff if asked is None else max(asked, backoff)
        last = attempt == tries
        report["wait"] = None if last else min(wait, max_wait)
        if on_try:
            on_try(report)
        if last:
            break
        sleep(min(wait, max_wait))
        backoff = min(backoff * 2, max_wait)
    # Every try failed: the last answer, if any, was a 409 or 503.
    return (answer if answer is not None and answer.status not in RETRY_STATUSES else None), key


def header(text):
    """`Name: value` from --header, as (name, value)."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not HEADER_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(f"not a header, expected 'Name: value': {text!r}")
    if any(c in value for c in "\r\n\0"):
        raise argparse.ArgumentTypeError(f"a header value cannot hold a line break or NUL: {name}")
    if name.lower() in OWN_HEADERS:
        raise argparse.ArgumentTypeError(f"the client sets {name} itself: {OWN_HEADERS[name.lower()]}")
    return name, value


def extra_headers(parser, args):
    """The headers of --header and --bearer, each name once."""
    pairs = list(args.header)
    if args.bearer is not None:
        try:
            pairs.append(header("Authorization: Bearer " + args.bearer))
        except argparse.ArgumentTypeError as error:
            parser.error(f"--bearer: {error}")
    headers = {}
    for name, value in pairs:
        if name.lower() in (n.lower() for n in headers):
            parser.error(f"{name} is given twice (--header, --bearer)")
        headers[name] = value
    return headers


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the API's base URL, without /orders")
    parser.add_argument("--product", required=True)
    parser.add_argument("--quantity", type=int, required=True)
    parser.add_argument("--key", help="the Idempotency-Key (default: a new UUID)")
    parser.add_argument("--tries", type=int, default=10, help="at most this many tries (default 10)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per try (default 5)")
    parser.add_argument("--max-wait", type=float, default=10.0, help="longest wait between tries")
    parser.add_argument("--log", action="store_true", help="one JSON line per try on stderr")
    parser.add_argument("--header", type=header, action="append", default=[], metavar="'NAME: VALUE'",
                        help="a header sent with every try (repeatable), e.g. 'Authorization: Bearer ...'")
    parser.add_argument("--bearer", metavar="TOKEN", help="sends 'Authorization: Bearer TOKEN' with every try")
    args = parser.parse_args(argv)
    headers = extra_headers(parser, args)

    def log(report):
        if args.log:
            print(json.dumps(report), file=sys.stderr, flush=True)

    answer, key = create_order(
        args.url,
        {"product": args.product, "quantity": args.quantity},
        key=args.key,
        tries=args.tries,
        timeout=args.timeout,
        max_wait=args.max_wait,
        on_try=log,
        headers=headers,
    )
    if answer is None:
        print(f"no answer after {args.tries} tries (Idempotency-Key {key}); "
              "retry later with the same key", file=sys.stderr)
        return 2
    sys.stdout.write(answer.body.decode("utf-8", errors="replace") + "\n")
    return 0 if 200 <= answer.status < 300 else 1


if __name__ == "__main__":
    sys.exit(main())
