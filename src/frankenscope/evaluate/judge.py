"""Optional LLM judge and image describer through any OpenAI-compatible chat-completions endpoint.

Configuration comes from environment variables (nothing is sent anywhere unless a judge is asked for):

    FRANKENSCOPE_JUDGE_BASE_URL    e.g. https://api.openai.com/v1 or http://localhost:8000/v1 (required)
    FRANKENSCOPE_JUDGE_API_KEY     bearer token (optional for local servers)
    FRANKENSCOPE_JUDGE_MODEL       model name for grading (required)
    FRANKENSCOPE_DESCRIBE_MODEL    model name for image descriptions (default: the judge model)
    FRANKENSCOPE_JUDGE_TIMEOUT     total seconds per request, connection to last byte (default 60)
    FRANKENSCOPE_JUDGE_RETRIES     retries after the first attempt (default 4)
    FRANKENSCOPE_JUDGE_BACKOFF     first retry delay in seconds, doubled per retry (default 1)

Requests use `http.client` (no extra dependency), temperature 0, and are retried with exponential
backoff (honouring Retry-After) on timeouts, connection errors, HTTP 408/409/429 and 5xx, and on
replies that are not valid chat completions. Safety: redirects are never followed (any 3xx is a
failed request, so the API key is only ever sent to FRANKENSCOPE_JUDGE_BASE_URL's origin); each
request has a total deadline (`timeout`, enforced by closing the socket, so an endpoint that drips
bytes cannot hold it longer) and the reply body is capped at `max_reply_bytes`. After `max_consecutive_failures` failed requests in a
row the client stops calling (a dead endpoint would otherwise cost the full retry schedule per item)
and returns None at once. Successful replies are cached in the response cache
(namespaces "judge" and "describe"), keyed by model, messages and settings, so reruns and other
models reuse them. Failures are never cached and never count as wrong: the judge returns
`judge_correct=None` (ungraded) and the describer returns None.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import io
import json
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate.cache import ResponseCache, stable_hash
from frankenscope.evaluate.extract import choice_options

ENV_BASE_URL = "FRANKENSCOPE_JUDGE_BASE_URL"
ENV_API_KEY = "FRANKENSCOPE_JUDGE_API_KEY"
ENV_MODEL = "FRANKENSCOPE_JUDGE_MODEL"
ENV_DESCRIBE_MODEL = "FRANKENSCOPE_DESCRIBE_MODEL"
ENV_TIMEOUT = "FRANKENSCOPE_JUDGE_TIMEOUT"
ENV_RETRIES = "FRANKENSCOPE_JUDGE_RETRIES"
ENV_BACKOFF = "FRANKENSCOPE_JUDGE_BACKOFF"

RETRY_STATUS = frozenset({408, 409, 429})
#: How much of the end of a response the judge sees.
RESPONSE_TAIL_CHARS = 3000

JUDGE_SYSTEM = (
    "You grade final answers to math and visual-reasoning questions against a reference answer. "
    "Count a response as correct when its final answer is equivalent to the reference: the same number "
    "in another form (0.5, 1/2 and 50% are equal), the same expression written differently, the right "
    "option named by its letter or by its text for multiple-choice questions, or a harmless difference "
    "of units or notation. Count it as incorrect when the value or option differs, when there is no "
    "final answer, or when it commits to several different answers. Reply with one JSON object and "
    'nothing else: {"is_correct": true or false, "extracted_answer": "...", "reason": "..."}.'
)
DESCRIBE_SYSTEM = (
    "You write exact descriptions of images for a reader who cannot see them. Report what is visible "
    "and nothing else: every piece of text, number, label and symbol; shapes, diagrams, charts, "
    "tables, axes and data values; colours that carry meaning; and where things are relative to each "
    "other. Never answer or solve any question about the image."
)
DESCRIBE_USER = (
    "Describe this image precisely and completely, under the headings Overview, Text and numbers, "
    "Visual elements, Layout, Key details. Do not solve anything."
)


@dataclass(frozen=True)
class JudgeConfig:
    """Endpoint settings. `backoff` is the first retry delay in seconds (doubled each retry, capped at 30 s)."""

    base_url: str
    model: str
    api_key: str | None = None
    describe_model: str | None = None
    timeout: float = 60.0
    max_retries: int = 4
    backoff: float = 1.0
    max_tokens: int = 1000
    describe_max_tokens: int = 2000
    max_consecutive_failures: int = 5
    max_reply_bytes: int = 8 * 1024 * 1024

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> JudgeConfig:
        env = os.environ if environ is None else environ
        missing = [v for v in (ENV_BASE_URL, ENV_MODEL) if not env.get(v)]
        if missing:
            raise FrankenscopeError(
                f"the LLM judge needs the environment variable(s) {', '.join(missing)}: set {ENV_BASE_URL} to an "
                f"OpenAI-compatible endpoint (e.g. https://api.openai.com/v1), {ENV_MODEL} to a model name and, "
                f"if the endpoint needs one, {ENV_API_KEY}; or run without the judge")
        try:
            timeout = float(env.get(ENV_TIMEOUT, "60"))
            retries = int(env.get(ENV_RETRIES, "4"))
            backoff = float(env.get(ENV_BACKOFF, "1"))
        except ValueError as e:
            raise FrankenscopeError(f"{ENV_TIMEOUT}, {ENV_RETRIES} and {ENV_BACKOFF} must be numbers ({e})") from e
        kwargs: dict[str, Any] = dict(base_url=env[ENV_BASE_URL], model=env[ENV_MODEL],
                                      api_key=env.get(ENV_API_KEY) or None,
                                      describe_model=env.get(ENV_DESCRIBE_MODEL) or None,
                                      timeout=timeout, max_retries=retries, backoff=backoff)
        kwargs.update(overrides)
        return cls(**kwargs)

    def public(self) -> dict[str, Any]:
        """The settings for result files (without the API key)."""
        d = asdict(self)
        d.pop("api_key")
        d["describe_model"] = self.describe_model or self.model
        return d


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    failures: int = 0
    cache_hits: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


class _Failed(Exception):
    """A failed request that retrying will not fix (4xx, a redirect, an oversized reply)."""


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers else None
    try:
        return None if value is None else float(value)
    except ValueError:
        return None  # an HTTP date: fall back to the exponential delay


class ChatClient:
    """Minimal chat-completions client with retries and an optional cache."""

    def __init__(self, config: JudgeConfig, cache: ResponseCache | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.cache = cache
        self.sleep = sleep
        self.stats = ClientStats()
        self._failures_in_a_row = 0

    @property
    def url(self) -> str:
        return self.config.base_url.rstrip("/") + "/chat/completions"

    def complete(self, messages: list[dict[str, Any]], *, model: str | None = None, max_tokens: int | None = None,
                 namespace: str = "judge", accept: Callable[[str], bool] | None = None) -> str | None:
        """The reply text, or None when every attempt failed. Replies are cached only if `accept` says so."""
        body = {"model": model or self.config.model, "messages": messages, "temperature": 0,
                "max_tokens": max_tokens or self.config.max_tokens}
        key = stable_hash(body)
        if self.cache is not None:
            hit = self.cache.get(namespace, key)
            if isinstance(hit, str):  # anything else is a corrupt entry: a miss
                self.stats.cache_hits += 1
                return hit
        if self._failures_in_a_row >= self.config.max_consecutive_failures:
            self.stats.skipped += 1
            return None
        reply = self._post_with_retries(body)
        self._failures_in_a_row = 0 if reply is not None else self._failures_in_a_row + 1
        if reply is not None and self.cache is not None and (accept is None or accept(reply)):
            self.cache.put(namespace, key, reply)
        return reply

    def _post_with_retries(self, body: dict[str, Any]) -> str | None:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        for attempt in range(self.config.max_retries + 1):
            self.stats.requests += 1
            delay = min(30.0, self.config.backoff * (2 ** attempt))
            try:
                return self._post(data, headers)
            except _Retryable as e:
                self._note(str(e))
                if e.retry_after is not None:
                    delay = min(30.0, max(delay, e.retry_after))
            except _Failed as e:
                self._note(str(e))
                self.stats.failures += 1
                return None  # a client error (bad key, unknown model, redirect) does not get better by retrying
            if attempt < self.config.max_retries:
                self.stats.retries += 1
                self.sleep(delay)
        self.stats.failures += 1
        return None

    def _note(self, msg: str) -> None:
        if len(self.stats.errors) < 20:
            self.stats.errors.append(msg)

    def _post(self, data: bytes, headers: dict[str, str]) -> str:
        """One POST to `url`: the reply text, or _Retryable / _Failed. Never follows redirects."""
        url = urllib.parse.urlsplit(self.url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise _Failed(f"{ENV_BASE_URL} must be an http(s) URL, got {self.config.base_url!r}")
        timeout = self.config.timeout
        conn: http.client.HTTPConnection
        if url.scheme == "https":
            conn = http.client.HTTPSConnection(url.hostname, url.port, timeout=timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
        deadline = time.monotonic() + timeout
        expired = threading.Event()

        def cut() -> None:  # the total deadline: shutting the socket down wakes any blocked read
            expired.set()
            if conn.sock is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(timeout, cut)
        timer.daemon = True
        timer.start()
        try:
            conn.connect()
            if expired.is_set():
                raise _Retryable(f"TimeoutError: no connection within {timeout:g} s")
            conn.request("POST", url.path + (f"?{url.query}" if url.query else ""), body=data, headers=headers)
            resp = conn.getresponse()
            raw = bytearray()
            while chunk := resp.read1(65536):
                raw += chunk
                if len(raw) > self.config.max_reply_bytes:
                    raise _Failed(f"reply larger than {self.config.max_reply_bytes} bytes")
                if time.monotonic() > deadline:
                    break
            if expired.is_set() or time.monotonic() > deadline:
                raise _Retryable(f"TimeoutError: no complete reply within {timeout:g} s")
        except (_Retryable, _Failed):
            raise
        except (OSError, http.client.HTTPException) as e:
            if expired.is_set():
                raise _Retryable(f"TimeoutError: no complete reply within {timeout:g} s") from e
            raise _Retryable(f"{type(e).__name__}: {e}") from e
        finally:
            timer.cancel()
            conn.close()
        status = resp.status
        if 300 <= status < 400:
            raise _Failed(f"HTTP {status}: redirect to {resp.getheader('Location')!r} refused (the request and "
                          f"its API key go only to {ENV_BASE_URL}; set it to the final URL)")
        if status in RETRY_STATUS or status >= 500:
            raise _Retryable(f"HTTP {status}: {resp.reason}", _retry_after(resp.headers))
        if status >= 400:
            raise _Failed(f"HTTP {status}: {resp.reason}")
        try:
            doc = json.loads(bytes(raw))
            content = doc["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise _Retryable(f"malformed reply ({type(e).__name__}: {e})") from e
        if isinstance(content, list):  # some servers return content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise _Retryable("malformed reply (content is not text)")
        return content


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)
_IS_CORRECT = re.compile(r'"is_correct"\s*:\s*(true|false)', re.IGNORECASE)


def parse_verdict(reply: str) -> dict[str, Any] | None:
    """{is_correct: bool, extracted_answer, reason} from a judge reply, or None when it states no verdict."""
    text = _FENCE.sub("", reply.strip())
    start, end = text.find("{"), text.rfind("}")
    if start >= 0 and end > start:
        try:
            doc = json.loads(text[start:end + 1])
        except json.JSONDecodeError:
            doc = None
        if isinstance(doc, dict):
            v = doc.get("is_correct")
            if isinstance(v, str) and v.strip().lower() in ("true", "false"):
                v = v.strip().lower() == "true"
            if isinstance(v, bool):
                return {"is_correct": v, "extracted_answer": doc.get("extracted_answer"),
                        "reason": doc.get("reason")}
    m = _IS_CORRECT.search(text)
    if m:
        return {"is_correct": m.group(1).lower() == "true", "extracted_answer": None, "reason": None}
    return None


class LLMJudge:
    """Grades a response by asking an LLM; `grade` returns judge_correct None when the call fails."""

    def __init__(self, client: ChatClient) -> None:
        self.client = client

    def messages(self, item: Item, response: str, extracted: str) -> list[dict[str, Any]]:
        question = item.meta.get("question", item.prompt)
        options = choice_options(item.meta) if item.answer_type == "choice" else {}
        choices = "\n".join(f"{k}. {v}" for k, v in options.items()) if options else "none (free-form answer)"
        tail = response[-RESPONSE_TAIL_CHARS:]
        user = (f"Question:\n{question}\n\nChoices:\n{choices}\n\nReference answer:\n{item.answer}\n\n"
                f"Final answer found by a rule-based extractor (may be wrong):\n{extracted}\n\n"
                f"End of the model's response:\n{tail}\n\nIs the model's final answer correct? Reply with JSON only.")
        return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]

    def grade(self, item: Item, response: str, extracted: str) -> dict[str, Any]:
        """{judge_correct: bool | None, judge_extracted, judge_reason, judge_error}."""
        reply = self.client.complete(self.messages(item, response, extracted), namespace="judge",
                                     accept=lambda r: parse_verdict(r) is not None)
        if reply is None:
            err = self.client.stats.errors[-1] if self.client.stats.errors else "request failed"
            if self.client.stats.skipped:
                err = f"endpoint given up after repeated failures (last: {err})"
            return {"judge_correct": None, "judge_extracted": None, "judge_reason": None, "judge_error": err}
        verdict = parse_verdict(reply)
        if verdict is None:
            return {"judge_correct": None, "judge_extracted": None, "judge_reason": None,
                    "judge_error": f"no verdict in the reply: {reply[:200]!r}"}
        return {"judge_correct": verdict["is_correct"], "judge_extracted": verdict["extracted_answer"],
                "judge_reason": verdict["reason"], "judge_error": None}


def image_data_url(path: str, max_pixels: int | None = None) -> str:
    """A PNG data URL of an image file (optionally downscaled to at most max_pixels)."""
    from frankenscope.generation import load_image

    buf = io.BytesIO()
    load_image(path, max_pixels).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class Describer:
    """Writes a textual description of an item's image (for the black image + description condition)."""

    def __init__(self, client: ChatClient, max_pixels: int | None = None) -> None:
        self.client = client
        self.max_pixels = max_pixels

    @property
    def model(self) -> str:
        return self.client.config.describe_model or self.client.config.model

    def describe(self, item: Item) -> str | None:
        if item.image is None:
            raise FrankenscopeError(f"item {item.id!r} has no image to describe")
        messages = [{"role": "system", "content": DESCRIBE_SYSTEM},
                    {"role": "user", "content": [
                        {"type": "image_url", "image_url": {"url": image_data_url(item.image, self.max_pixels)}},
                        {"type": "text", "text": DESCRIBE_USER}]}]
        reply = self.client.complete(messages, model=self.model, max_tokens=self.client.config.describe_max_tokens,
                                     namespace="describe", accept=lambda r: bool(r.strip()))
        return reply.strip() if reply and reply.strip() else None
