"""Token lengths per field and per role, and the generation ratio Rg (PLW paper: Huerta-Enochian & Ko,
"Instruction Fine-Tuning: Does Prompt Loss Matter?", Sec. 2.1 and Table 1).

Counting convention (the PLW paper's Table 1): every field is tokenized *on its own*, without any prompt template
and without special tokens. The prompt of a sample is instruction + input (the paper: "we use the term prompt to
refer to the concatenation of instruction and input texts"), so prompt tokens = instruction tokens + input
tokens; the completion is the output. For chat data (and Alpaca records with a ``history``) the prompt is every
non-assistant turn and the completion every assistant turn.

Rg: the paper defines the generation ratio of a sample as completion length / prompt length and, for a data set,
"the mean completion-prompt ratio". Its Table 1 numbers match the *ratio of the means* (AlpacaData:
64.51 / (13.40 + 6.25) = 3.28 vs 3.27 printed; AlpacaDataShort: 14.62 / (16.93 + 162.34) = 0.0816 vs 0.082),
not the mean of per-sample ratios, so both are reported and the recommendation uses the ratio of means, the
quantity behind the paper's Rg axis (Table 4).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from witune.data.example import Example

ALPACA_FIELDS = ("instruction", "input", "output")
PC_FIELDS = ("prompt", "completion")


@dataclass(frozen=True)
class SampleLengths:
    """Token counts of one sample: per field (Alpaca / prompt-completion) and per role, plus prompt/completion."""

    fields: dict[str, int]
    roles: dict[str, int]
    prompt: int
    completion: int

    @property
    def rg(self) -> float:
        """Completion / prompt tokens of this sample (inf for an empty prompt)."""
        return self.completion / self.prompt if self.prompt else math.inf


def count_tokens(texts: Sequence[str], tokenizer) -> list[int]:
    """Token count of each text: one batched fast-tokenizer call, no special tokens (the paper counts raw text)."""
    if not texts:
        return []
    ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
    return [len(x) for x in ids]


def sample_lengths(examples: Sequence[Example], tokenizer) -> list[SampleLengths]:
    """Token counts of every example, with all texts tokenized in one batch."""
    texts: list[str] = []
    plan: list[tuple[list[str], list[str]]] = []  # per example: field names, message roles (in `texts` order)
    for ex in examples:
        names = [f for f in (*ALPACA_FIELDS, *PC_FIELDS) if f in ex.fields]
        texts += [ex.fields[f] for f in names]
        texts += [m.content for m in ex.messages]
        plan.append((names, [m.role for m in ex.messages]))
    counts = iter(count_tokens(texts, tokenizer))
    out = []
    for names, roles in plan:
        fields = {f: next(counts) for f in names}
        per_msg = [next(counts) for _ in roles]
        if "instruction" in fields:
            # The final user turn of an Alpaca record is instruction + "\n\n" + input; count it field-wise as the
            # paper does (instruction and input tokenized separately).
            last_user = max(i for i, r in enumerate(roles) if r == "user")
            per_msg[last_user] = fields["instruction"] + fields["input"]
        by_role: dict[str, int] = {}
        for r, n in zip(roles, per_msg):
            by_role[r] = by_role.get(r, 0) + n
        completion = by_role.get("assistant", 0)
        out.append(SampleLengths(fields, by_role, sum(by_role.values()) - completion, completion))
    return out


@dataclass(frozen=True)
class Summary:
    """Mean, (population) standard deviation and total of one length, as in the paper's Table 1."""

    mean: float
    std: float
    total: int
    count: int


def summarize(values: Sequence[int]) -> Summary:
    n = len(values)
    if n == 0:
        return Summary(0.0, 0.0, 0, 0)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / n
    return Summary(mean, math.sqrt(var), int(sum(values)), n)


@dataclass(frozen=True)
class RatioStats:
    """The data set's generation ratio, both ways, and its per-sample distribution."""

    ratio_of_means: float  # total completion tokens / total prompt tokens (matches the paper's Table 1)
    mean_of_ratios: float  # mean over samples of completion / prompt (the paper's wording in Sec. 2.1)
    median: float
    short_fraction: float  # share of samples with Rg < 1 (short-completion samples)
    empty_prompts: int  # samples left out of the per-sample ratios (no prompt tokens)

    @property
    def kind(self) -> str:
        return "short-completion" if self.ratio_of_means < 1 else "long-completion"


def ratio_stats(lengths: Sequence[SampleLengths]) -> RatioStats:
    prompt = sum(s.prompt for s in lengths)
    completion = sum(s.completion for s in lengths)
    ratios = sorted(s.rg for s in lengths if s.prompt > 0)
    if not ratios:
        return RatioStats(math.inf, math.inf, math.inf, 0.0, len(lengths))
    n = len(ratios)
    median = ratios[n // 2] if n % 2 else (ratios[n // 2 - 1] + ratios[n // 2]) / 2
    return RatioStats(
        ratio_of_means=completion / prompt if prompt else math.inf,
        mean_of_ratios=sum(ratios) / n,
        median=median,
        short_fraction=sum(r < 1 for r in ratios) / n,
        empty_prompts=len(lengths) - n,
    )


@dataclass(frozen=True)
class TrainedParts:
    """The rendered rows (template text included) as the loss sees them: per part (each role, and each weighted
    span as ``span <kind>``) the tokens, the tokens with a non-zero final weight, and the sum of their weights;
    and the generation ratio of the trained parts. Weights are those of *predicting* each token."""

    tokens: dict[str, int]
    trained: dict[str, int]
    weight_sum: dict[str, float]
    rg_tokens: float  # rendered response tokens / rendered prompt tokens
    rg_weighted: float  # sum of response-token weights / sum of prompt-token weights (inf when prompts weigh 0)
    rows: int
    rows_cut: int  # rows where a token straddled a segment boundary and the text was cut (witune.data.tokens)


def trained_parts(rows: Sequence) -> TrainedParts:
    """Per-role and per-span counts of `witune.data.Rendered` rows."""
    tokens: dict[str, int] = {}
    trained: dict[str, int] = {}
    weight_sum: dict[str, float] = {}
    side = {True: [0, 0.0], False: [0, 0.0]}  # response / prompt: tokens, weight sum
    for r in rows:
        for i, (role, w, resp) in enumerate(zip(r.roles, r.weights, r.response)):
            parts = [role] + ([f"span {s}"] if (s := r.span_at(i)) else [])
            for part in parts:
                tokens[part] = tokens.get(part, 0) + 1
                trained[part] = trained.get(part, 0) + (w != 0)
                weight_sum[part] = weight_sum.get(part, 0.0) + w
            side[bool(resp)][0] += 1
            side[bool(resp)][1] += w
    (resp_n, resp_w), (prompt_n, prompt_w) = side[True], side[False]
    return TrainedParts(
        tokens,
        trained,
        weight_sum,
        resp_n / prompt_n if prompt_n else math.inf,
        resp_w / prompt_w if prompt_w else math.inf,
        len(rows),
        sum(1 for r in rows if r.cuts),
    )
