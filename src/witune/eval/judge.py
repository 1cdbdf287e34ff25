"""Pairwise LLM-as-judge win rate (AlpacaEval / MT-Bench style).

For each instruction the judge sees the model's output and the reference output twice, once in each order
(A/B then B/A), which cancels the judge's position bias. Each game scores 1 (model better), 0.5 (tie) or 0;
an instruction's score is the mean of its two games and the win rate is the mean over instructions, with
the standard error of that mean. The prompt is MT-Bench's "pair-v2" template (system prompt + template),
whose verdict format is "[[A]]", "[[B]]" or "[[C]]" (tie).

Two backends:
- `LocalJudge`: a local HF causal LM. Instead of parsing free text it compares the log-probabilities of the
  three verdict strings after the prompt, which gives a verdict even for tiny or random models.
- `OpenAIJudge`: any OpenAI-compatible endpoint, plain HTTP POST to /v1/chat/completions (no SDK). Plain
  http is accepted only for this machine (loopback) unless `allow_insecure_http`: elsewhere the API key and the
  data would cross the network in clear. Redirects are never followed: urllib would resend the Authorization
  header to wherever the redirect points.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# MT-Bench "pair-v2" (FastChat judge_prompts.jsonl); used when the data file is not available.
PAIR_SYSTEM = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI "
    "assistants to the user question displayed below. You should choose the assistant that follows the "
    "user's instructions and answers the user's question better. Your evaluation should consider factors "
    "such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of their responses. "
    "Begin your evaluation by comparing the two responses and provide a short explanation. Avoid any position "
    "biases and ensure that the order in which the responses were presented does not influence your decision. "
    "Do not allow the length of the responses to influence your evaluation. Do not favor certain names of the "
    "assistants. Be as objective as possible. After providing your explanation, output your final verdict by "
    'strictly following this format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and '
    '"[[C]]" for a tie.'
)
PAIR_TEMPLATE = (
    "[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{answer_a}\n"
    "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{answer_b}\n"
    "[The End of Assistant B's Answer]"
)
VERDICTS = ("A", "B", "C")  # C = tie, as in MT-Bench


@dataclass(frozen=True)
class JudgePrompt:
    """A system prompt and a user template with {question}, {answer_a}, {answer_b}."""

    system: str = PAIR_SYSTEM
    template: str = PAIR_TEMPLATE

    @classmethod
    def from_mt_bench(cls, path: str | Path, name: str = "pair-v2") -> JudgePrompt:
        """Read one template from FastChat's judge_prompts.jsonl (fields name, system_prompt, prompt_template)."""
        for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("name") == name:
                if rec.get("type") != "pairwise":
                    raise ValueError(f"{path}, line {i}: judge prompt {name!r} is not pairwise")
                return cls(system=rec["system_prompt"], template=rec["prompt_template"])
        raise ValueError(f"{path}: no judge prompt named {name!r}")

    def messages(self, question: str, answer_a: str, answer_b: str) -> list[dict[str, str]]:
        user = self.template.format(question=question, answer_a=answer_a, answer_b=answer_b)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]


class Judge(Protocol):
    def verdict(self, messages: list[dict[str, str]]) -> str:
        """Return "A", "B" or "C" (tie) for a judge conversation."""


def parse_verdict(text: str) -> str:
    """The last "[[A]]"/"[[B]]"/"[[C]]" in a judge's answer; "C" (tie) when there is none."""
    found = re.findall(r"\[\[([ABC])\]\]", text)
    return found[-1] if found else "C"


class LocalJudge:
    """A local HF causal LM as judge, by log-probability of the verdict strings "[[A]]", "[[B]]", "[[C]]".

    Scoring the full strings (summed token log-probs) rather than a single next token makes the choice
    independent of how the tokenizer splits "[[A]]".
    """

    def __init__(self, model, tokenizer, allow_tie: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.options = VERDICTS if allow_tie else VERDICTS[:2]

    @classmethod
    def from_pretrained(cls, path: str | Path, allow_tie: bool = True) -> LocalJudge:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForCausalLM.from_pretrained(str(path))
        model.eval()
        return cls(model, tok, allow_tie)

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The judge prompt in the template the judge model was trained with (its run's config.yaml when it is a
        witune model, else its chat template, else Alpaca): the verdict is read where its answers start."""
        from witune.eval.generation import format_prompt

        text = format_prompt(self.tokenizer, messages)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def verdict_logprobs(self, messages: list[dict[str, str]]) -> dict[str, float]:
        """Summed log-probability of each verdict string following the judge prompt."""
        import torch  # here: `witune.eval` (the evaluator registry the analysis reads) imports no torch

        prompt = self._prompt_ids(messages)
        conts = [self.tokenizer(f"[[{v}]]", add_special_tokens=False)["input_ids"] for v in self.options]
        seqs = [prompt + c for c in conts]
        width = max(len(s) for s in seqs)
        from witune.models import pad_token_id
        from witune.models.logprob import next_token_logprobs

        # Right padding: causal attention never lets a pad change a real position, so any id serves.
        pad = pad_token_id(self.tokenizer)
        pad = 0 if pad is None else pad
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        device = next(self.model.parameters()).device
        ids = ids.to(device)
        with torch.no_grad():
            logp = next_token_logprobs(self.model(input_ids=ids, attention_mask=mask.to(device)).logits, ids)
        out = {}
        for row, (v, c) in enumerate(zip(self.options, conts)):
            # logp[:, t] scores the token at position t + 1: the verdict's tokens start at len(prompt)
            out[v] = float(logp[row, len(prompt) - 1 : len(prompt) - 1 + len(c)].sum())
        return out

    def verdict(self, messages: list[dict[str, str]]) -> str:
        lp = self.verdict_logprobs(messages)
        return max(lp, key=lp.__getitem__)


class OpenAIJudge:
    """Any OpenAI-compatible chat endpoint; base_url like "http://host:8000" or "http://host:8000/v1"."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        max_tokens: int = 512,
        timeout: float = 120.0,
        allow_insecure_http: bool = False,
    ):
        check_judge_url(base_url, allow_insecure_http)
        base = base_url.rstrip("/")
        self.url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        self.model = model
        self.api_key = api_key
        self.max_tokens = max_tokens
        self.timeout = timeout

    def complete(self, messages: list[dict[str, str]]) -> str:
        body = {"model": self.model, "messages": messages, "temperature": 0.0, "max_tokens": self.max_tokens}
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with _NO_REDIRECTS.open(req, timeout=self.timeout) as resp:
                payload = json.loads(resp.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            if 300 <= e.code < 400:
                raise RuntimeError(
                    f"judge endpoint {self.url} redirects (HTTP {e.code}) to "
                    f"{e.headers.get('Location')!r}; redirects are not followed, so that the API key "
                    "goes nowhere else: give the final URL as --judge"
                ) from None
            raise RuntimeError(f"judge endpoint {self.url} answered HTTP {e.code}: {e.read()[:200]!r}") from e
        except urllib.error.URLError as e:
            raise RuntimeError(f"judge endpoint {self.url} unreachable: {e.reason}") from e
        except TimeoutError as e:
            raise RuntimeError(f"judge endpoint {self.url} did not answer within {self.timeout:.0f} s") from e
        try:
            return payload["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as e:
            raise RuntimeError(f"judge endpoint {self.url} returned no choices[0].message.content") from e

    def verdict(self, messages: list[dict[str, str]]) -> str:
        return parse_verdict(self.complete(messages))


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Turn every redirect into an HTTPError instead of following it (with the Authorization header)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # urllib's signature
        return None


_NO_REDIRECTS = urllib.request.build_opener(_RefuseRedirects)


def check_judge_url(url: str, allow_insecure_http: bool = False) -> None:
    """https anywhere; http only to a loopback host (localhost, 127.0.0.0/8, ::1) unless explicitly allowed."""
    from witune.data.errors import ConfigError

    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"judge URL {url!r}: expected http(s)://host[:port][/v1]")
    if parts.scheme == "http" and not allow_insecure_http and not _loopback(parts.hostname):
        raise ConfigError(
            f"judge URL {url!r}: plain http to another machine would send the API key and the data "
            "unencrypted; use https, or allow it explicitly (--judge-allow-http)"
        )


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class WinRate:
    """Win rate of the model against the reference (ties count half) with per-instruction details."""

    win_rate: float
    stderr: float | None
    n: int
    wins: int  # games (not instructions) the model won, over 2n games
    ties: int
    losses: int
    scores: list[float]


def pairwise_win_rate(
    judge: Judge,
    instructions: Sequence[str],
    outputs: Sequence[str],
    references: Sequence[str],
    prompt: JudgePrompt | None = None,
) -> WinRate:
    """Judge each (instruction, model output, reference output) in both orders and aggregate."""
    from tqdm.auto import tqdm

    if not (len(instructions) == len(outputs) == len(references)):
        raise ValueError("instructions, outputs and references must have the same length")
    if not instructions:
        raise ValueError("nothing to judge")
    prompt = prompt or JudgePrompt()
    scores, tally = [], {"win": 0, "tie": 0, "loss": 0}
    for q, out, ref in tqdm(list(zip(instructions, outputs, references)), desc="judging"):
        # Game 1: model is A. Game 2: model is B. Score from the model's point of view.
        g1 = {"A": 1.0, "C": 0.5, "B": 0.0}[judge.verdict(prompt.messages(q, out, ref))]
        g2 = {"B": 1.0, "C": 0.5, "A": 0.0}[judge.verdict(prompt.messages(q, ref, out))]
        for g in (g1, g2):
            tally["win" if g == 1.0 else "tie" if g == 0.5 else "loss"] += 1
        scores.append((g1 + g2) / 2)
    n = len(scores)
    mean = sum(scores) / n
    stderr = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1) / n) if n > 1 else None
    return WinRate(mean, stderr, n, tally["win"], tally["tie"], tally["loss"], scores)


def load_reference_outputs(path: str | Path) -> list[dict[str, str]]:
    """AlpacaEval model_outputs.json: a JSON array of {instruction, output, ...}; checks the two fields."""
    path = Path(path)
    from witune.data.errors import DataError, Location

    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(Location(str(path), e.lineno, "line"), f"invalid JSON: {e.msg}") from None
    if not isinstance(records, list):
        raise DataError(Location(str(path), 1), "expected a JSON array of {instruction, output}")
    for i, rec in enumerate(records, 1):
        for field in ("instruction", "output"):
            if not isinstance(rec, dict) or not isinstance(rec.get(field), str):
                raise DataError(Location(str(path), i), "missing or non-string value", field)
    return records
