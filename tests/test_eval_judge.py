"""Pairwise judge: local HF judge by verdict log-probs, and an OpenAI-compatible endpoint served locally."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from witune.eval.judge import (
    JudgePrompt,
    LocalJudge,
    OpenAIJudge,
    load_reference_outputs,
    pairwise_win_rate,
    parse_verdict,
)
from witune.eval.local_tasks import default_data_dir

DATA = default_data_dir()


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    from witune.models.tiny import make_tiny_model

    return LocalJudge.from_pretrained(make_tiny_model(tmp_path_factory.mktemp("judge")))


class FixedJudge:
    """Always prefers the answer containing `good` (for checking the aggregation arithmetic)."""

    def __init__(self, good: str):
        self.good = good

    def verdict(self, messages):
        user = messages[-1]["content"]
        a = user.split("[The Start of Assistant A's Answer]")[1].split("[The End")[0]
        b = user.split("[The Start of Assistant B's Answer]")[1].split("[The End")[0]
        return "A" if self.good in a else "B" if self.good in b else "C"


def test_win_rate_counts_both_orders_and_ties_half():
    wr = pairwise_win_rate(FixedJudge("good"), ["q1", "q2", "q3"], ["good", "bad", "meh"], ["bad", "good", "meh"])
    assert wr.scores == [1.0, 0.0, 0.5] and wr.win_rate == pytest.approx(0.5)
    assert (wr.wins, wr.ties, wr.losses) == (2, 2, 2)
    assert wr.stderr == pytest.approx(0.5 / 3**0.5)  # std([1, 0, .5], ddof=1) / sqrt(3)


def test_position_bias_cancels():
    class AlwaysA:
        def verdict(self, messages):
            return "A"

    assert pairwise_win_rate(AlwaysA(), ["q"] * 4, ["x"] * 4, ["y"] * 4).win_rate == 0.5


def test_parse_verdict():
    assert parse_verdict("A is fine but [[B]] ... final: [[A]]") == "A"
    assert parse_verdict("no verdict") == "C"


@pytest.mark.skipif(DATA is None, reason="shared evaluation data (../shared/data/eval) not present")
def test_local_judge_on_alpaca_eval_and_mt_bench_prompt(judge):
    prompt = JudgePrompt.from_mt_bench(DATA / "mt_bench" / "judge_prompts.jsonl")
    assert "[[C]]" in prompt.system
    refs = load_reference_outputs(DATA / "alpaca_eval" / "text_davinci_003_model_outputs.json")[:3]
    msgs = prompt.messages(refs[0]["instruction"], "Short answer.", refs[0]["output"])
    lp = judge.verdict_logprobs(msgs)
    assert set(lp) == {"A", "B", "C"} and all(v < 0 for v in lp.values())
    assert judge.verdict(msgs) == max(lp, key=lp.get)
    wr = pairwise_win_rate(
        judge, [r["instruction"] for r in refs], ["Short answer."] * 3, [r["output"] for r in refs], prompt
    )
    assert wr.n == 3 and 0.0 <= wr.win_rate <= 1.0 and wr.wins + wr.ties + wr.losses == 6


def test_openai_backend_against_a_real_local_endpoint(judge):
    """A tiny OpenAI-compatible server on 127.0.0.1 answering with the local model's verdict."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert self.path == "/v1/chat/completions" and body["temperature"] == 0.0
            content = f"Explanation... [[{judge.verdict(body['messages'])}]]"
            data = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(data.encode())

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = OpenAIJudge(f"http://127.0.0.1:{server.server_port}", model="tiny")
        qs, outs, refs = ["Name a colour.", "Add 2 and 3."], ["Blue.", "5"], ["Red is a colour.", "It is 5."]
        via_http = pairwise_win_rate(remote, qs, outs, refs)
        local = pairwise_win_rate(judge, qs, outs, refs)
        assert via_http.scores == local.scores
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(RuntimeError, match="unreachable"):
        OpenAIJudge(f"http://127.0.0.1:{server.server_port}", "m", timeout=2).complete([])


def _server(handler_cls):
    server = HTTPServer(("127.0.0.1", 0), handler_cls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_judge_refuses_plain_http_to_other_hosts():
    """Security: the API key must not travel unencrypted to another machine unless explicitly allowed."""
    from witune.data.errors import ConfigError

    for url in ("http://judge.example.com:8000", "http://10.1.2.3/v1", "http://[2001:db8::1]:80"):
        with pytest.raises(ConfigError, match="plain http"):
            OpenAIJudge(url, "m", api_key="sk-secret")
    OpenAIJudge("http://judge.example.com:8000", "m", api_key="k", allow_insecure_http=True)  # asked for
    for url in ("https://judge.example.com", "http://127.0.0.1:8000", "http://localhost:1/v1", "http://[::1]:9"):
        OpenAIJudge(url, "m", api_key="k")  # encrypted, or never leaves this machine


def test_judge_does_not_follow_redirects_with_its_key():
    """A real endpoint on 127.0.0.1 redirects to a second local server: the key must never arrive there."""
    seen: list[tuple[str, str | None]] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def _answer(self):
            seen.append((self.command, self.headers.get("Authorization")))
            data = json.dumps({"choices": [{"message": {"content": "[[A]]"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer  # noqa: N815

        def log_message(self, *args):
            pass

    other = _server(Elsewhere)

    class Redirecting(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(int(self.path.split("/")[2]))  # /r/<code>/v1/chat/completions
            self.send_header("Location", f"http://127.0.0.1:{other.server_port}/v1/chat/completions")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    first = _server(Redirecting)
    try:
        for code in (301, 302, 303, 307, 308):
            judge = OpenAIJudge(
                f"http://127.0.0.1:{first.server_port}/r/{code}/v1", "m", api_key="sk-secret", timeout=5
            )
            with pytest.raises(RuntimeError, match="redirect"):
                judge.complete([{"role": "user", "content": "hi"}])
        assert seen == []  # nothing (and so no key) ever reached the redirect target
        # The target itself works and receives the key when asked directly (the server above is real).
        direct = OpenAIJudge(f"http://127.0.0.1:{other.server_port}/v1", "m", api_key="sk-secret", timeout=5)
        assert direct.complete([]) == "[[A]]" and seen == [("POST", "Bearer sk-secret")]
    finally:
        for s in (first, other):
            s.shutdown()
            s.server_close()
