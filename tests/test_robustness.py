"""`witune:robustness`: deterministic under a seed, the clean score at typo rate 0, and the drop of a planted
model that only knows the answers under the clean prompt. Items come from the real ARC-Challenge file."""

from __future__ import annotations

import random

import pytest

from witune.eval.perturb import PERTURBATIONS, Variant, add_typos, build_prompt, load_items, variants
from witune.eval.robustness import HFScorer, RobustnessSettings, parse_arg, robustness_rows


@pytest.fixture(scope="module")
def arc(shared_data):
    return load_items("arc_challenge", shared_data / "eval")


class CleanOnlyScorer:
    """A planted model: it knows every answer, but only when the prompt is exactly the clean one (clean
    instruction, `A.` options, no typo, few-shot order as given); to any other prompt it answers the first
    listed option. Its true clean accuracy is 1 and its true perturbed accuracy is the share of gold == 0."""

    def __init__(self, items, shots):
        clean = Variant("clean", "clean")
        self.known = {}
        for k, it in enumerate(items):
            prompt, _ = build_prompt(it, len(shots) + k, clean, shots)
            self.known[prompt] = it.gold

    def loglikelihoods(self, contexts, continuations):
        out = []
        for ctx, conts in zip(contexts, continuations):
            best = self.known.get(ctx, 0)
            out.append([0.0 if j == best else -5.0 for j in range(len(conts))])
        return out


def _by_metric(rows):
    return {r["metric"]: r["value"] for r in rows}


def test_planted_clean_only_model_shows_the_drop(arc):
    settings = RobustnessSettings(shots=3, seeds=2, rate=0.1)
    items = arc[: 3 + 40]
    m = _by_metric(robustness_rows(CleanOnlyScorer(items[3:], items[:3]), items, settings, seed=0))
    base_rate = sum(it.gold == 0 for it in items[3:]) / 40  # what answering "A" scores
    assert m["clean_acc"] == 1.0
    for p in PERTURBATIONS:
        assert m[f"{p}_mean_acc"] == pytest.approx(base_rate), p
        assert m[f"{p}_drop"] == pytest.approx(1.0 - base_rate), p
    assert m["drop"] == pytest.approx(1.0 - base_rate) and m["worst_acc"] == pytest.approx(base_rate)
    assert base_rate < 0.5  # so the drop is large and the assertions above are not vacuous


def test_rate_zero_typos_give_the_clean_score(arc):
    items = arc[: 2 + 30]
    planted = CleanOnlyScorer(items[2:], items[:2])
    m = _by_metric(
        robustness_rows(
            planted, items, RobustnessSettings(shots=2, seeds=3, rate=0.0, perturbations=("typos",)), seed=5
        )
    )
    assert m["typos_mean_acc"] == m["clean_acc"] == 1.0 and m["typos_drop"] == 0.0


def test_typos_are_seeded_and_close_to_the_rate():
    text = "The quick brown fox jumps over the lazy dog while the farmer watches from the barn " * 20
    a, b = add_typos(text, 0.1, random.Random(3)), add_typos(text, 0.1, random.Random(3))
    assert a == b and a != add_typos(text, 0.1, random.Random(4)) and add_typos(text, 0.0, random.Random(3)) == text
    letters = sum(c.isalpha() for c in text)
    changed = sum(x != y for x, y in zip(a, text))  # a lower bound on the edits (a drop shifts the rest)
    assert 0.03 * letters < changed


def test_variants_and_prompts_are_deterministic_under_a_seed(arc):
    items = arc[:8]
    vs1, vs2 = variants(PERTURBATIONS, 0.2, 2, 11, 3), variants(PERTURBATIONS, 0.2, 2, 11, 3)
    p1 = [build_prompt(items[5], 5, v, items[:3]) for v in vs1]
    assert p1 == [build_prompt(items[5], 5, v, items[:3]) for v in vs2]
    other = [build_prompt(items[5], 5, v, items[:3]) for v in variants(PERTURBATIONS, 0.2, 2, 12, 3)]
    typo = [i for i, v in enumerate(vs1) if v.perturbation == "typos"]
    assert all(p1[i] != other[i] for i in typo)  # another seed, other typos
    clean = p1[0][0]
    assert clean.startswith("The following is a multiple choice question") and "\nA. " in clean
    fmt = [p for (p, c), v in zip(p1, vs1) if v.name == "option_format/number_dot"][0]
    assert "\n1. " in fmt


def test_parse_arg_errors_name_the_option():
    s = parse_arg("piqa:rate=0.2:shots=0:only=typos+paraphrase")
    assert (s.bench, s.rate, s.shots, s.perturbations) == ("piqa", 0.2, 0, ("typos", "paraphrase"))
    with pytest.raises(ValueError, match="bad option 'rate=2'"):
        parse_arg("arc_challenge:rate=2")
    with pytest.raises(ValueError, match="bad option 'only=nonsense'"):
        parse_arg("arc_challenge:only=nonsense")


def test_real_model_rows_repeat_under_the_same_seed(arc, tiny_model, tiny_tokenizer):
    scorer = HFScorer(tiny_model.eval(), tiny_tokenizer, batch_size=8)
    settings = RobustnessSettings(shots=0, seeds=1, rate=0.1, perturbations=("typos", "option_format"))
    items = arc[:8]
    a = robustness_rows(scorer, items, settings, seed=1)
    b = robustness_rows(scorer, items, settings, seed=1)
    assert a == b
    m = _by_metric(a)
    assert m["n_items"] == 8 and 0 <= m["clean_acc"] <= 1
    assert m["drop"] == pytest.approx(m["clean_acc"] - m["mean_acc"])
