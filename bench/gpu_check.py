"""The GPU check: everything witune claims for GPUs, measured on one lent GPU in under 8 minutes.

  python bench/gpu_check.py                  # installs what it needs (pip), runs every part, writes the results
  python bench/gpu_check.py --no-install     # use what is installed; parts whose packages are missing skip

Parts (each has its own time cap; a part that cannot run is "skipped" with its reason, one that breaks is
"failed" with its error, and the others still run):
  install      pip install liger-kernel, cut-cross-entropy, trl (torch pinned to the installed version; a
               registry that cannot be reached only makes the parts that need them skip)
  backends     witune's chunked loss with backend liger / cce against backend torch on CUDA: the loss and the
               gradients of the hidden states and the output projection (bf16 inputs, fp32 sums)
  bf16         `witune train` with precision bf16 on the GPU: batch 8 x 1 and 2 x 4 take the same step within
               the bf16 tolerances of tests/test_train_invariance.py
  loss_bench   one forward + backward of the loss at a 128,256 vocabulary (hidden 2,048, 8,192 tokens, bf16):
               time and peak memory of F.linear + cross-entropy, witune (torch and fused backends), Liger's
               fused linear cross-entropy, cut-cross-entropy, and TRL's chunked log-prob kernel
  train_bench  training tokens/s and MFU (6 x parameters x tokens/s over the GPU's bf16 dense peak) of
               `witune train` against stock TRL SFTTrainer, SmolLM2-135M, bf16, same data and batch
Results: one JSON (`--out`, default bench/results/gpu_check.json) and a table written into BENCHMARKS.md
between the markers `<!-- gpu_check:begin -->` and `<!-- gpu_check:end -->` (`--benchmarks`).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(ROOT / "src"))
from method import machine  # noqa: E402

from witune.atomic import atomic_write_text  # noqa: E402

PACKAGES = {"liger": "liger_kernel", "cce": "cut_cross_entropy", "trl": "trl"}
PIP_NAMES = ["liger-kernel", "cut-cross-entropy", "trl"]
BEGIN, END = "<!-- gpu_check:begin -->", "<!-- gpu_check:end -->"
# bf16 dense tensor-core peaks (FLOP/s) for MFU, by a substring of torch.cuda.get_device_name().
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}
# The bf16 step tolerances, derived in tests/test_train_invariance.py: u = 2^-8, 4 partial gradients.
BF16_U = 2.0**-8
BF16_PARAM_TOL = 5 * BF16_U


class Skip(Exception):
    """A part that cannot run here; the message is the reason."""


def have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def need_cuda() -> None:
    import torch

    if not torch.cuda.is_available():
        raise Skip("no CUDA device (torch.cuda.is_available() is False)")


def need(*keys: str) -> None:
    missing = [PACKAGES[k] for k in keys if not have(PACKAGES[k])]
    if missing:
        raise Skip(f"package(s) {', '.join(missing)} not installed (install failed or --no-install)")


def part_install(enabled: bool) -> dict:
    if not enabled:
        raise Skip("--no-install")
    import torch

    pin = f"torch=={torch.__version__.split('+')[0]}"  # keep the installed torch (and its CUDA build)
    cmd = [sys.executable, "-m", "pip", "install", "-q", pin, *PIP_NAMES]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    except subprocess.TimeoutExpired:
        raise Skip("pip install took over 180 s (registry unreachable?)") from None
    if res.returncode != 0:
        raise Skip(
            f"pip install failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}"
        )
    importlib.invalidate_caches()
    return {"installed": {k: have(m) for k, m in PACKAGES.items()}}


def part_backends() -> dict:
    need_cuda()
    import torch

    from witune.loss import weighted_nll_from_hidden

    available = [b for b in ("liger", "cce") if have(PACKAGES[b])]
    if not available:
        need("liger", "cce")
    g = torch.Generator(device="cuda").manual_seed(0)
    n, hidden, vocab = 4096, 1024, 128256
    h0 = torch.randn(n, hidden, device="cuda", generator=g, dtype=torch.bfloat16)
    w0 = (torch.randn(vocab, hidden, device="cuda", generator=g) * hidden**-0.5).to(torch.bfloat16)
    labels = torch.randint(0, vocab, (n,), device="cuda", generator=g)
    labels[:100] = -100
    weights = torch.where(torch.arange(n, device="cuda") < n // 3, 0.1, 1.0)

    def run(backend: str):
        h, w = h0.clone().requires_grad_(True), w0.clone().requires_grad_(True)
        s = weighted_nll_from_hidden(h, w, labels, weights, backend=backend)
        s.weighted_sum.backward()
        return s.weighted_sum.detach().float(), h.grad.float(), w.grad.float()

    ref = run("torch")
    out = {}
    for backend in available:
        loss, gh, gw = run(backend)
        out[backend] = {
            "loss_rel": float((loss - ref[0]).abs() / ref[0].abs()),
            "grad_hidden_rel": float((gh - ref[1]).norm() / ref[1].norm()),
            "grad_weight_rel": float((gw - ref[2]).norm() / ref[2].norm()),
        }
    # bf16 inputs: the kernels' logits are rounded differently; a few bf16 units (2^-8) of relative norm.
    out["ok"] = all(v["loss_rel"] < 1e-2 and v["grad_hidden_rel"] < 5e-2 for v in out.values() if isinstance(v, dict))
    return out


def part_bf16() -> dict:
    need_cuda()
    from safetensors.torch import load_file

    from witune.models.tiny import make_tiny_model
    from witune.train import load_config, train

    root = Path(tempfile.mkdtemp(prefix="gpu-check-bf16-"))
    make_tiny_model(root / "model")
    with open(root / "data.jsonl", "w") as f:
        for i, (p, c) in enumerate(zip([2, 60, 3, 45, 1, 80, 5, 30], [40, 1, 25, 2, 3, 30, 1, 8])):
            f.write(json.dumps({"prompt": "word " * p + str(i), "completion": " answer" * c}) + "\n")

    def run(bs: int, acc: int):
        cfg = load_config(
            overrides=dict(
                model=str(root / "model"),
                data=str(root / "data.jsonl"),
                template="plain",
                prompt_weight=0.3,
                optimizer="sgd",
                learning_rate=1.0,
                warmup_ratio=0.0,
                lr_scheduler="constant",
                max_grad_norm=0.0,
                max_steps=1,
                seed=3,
                progress=False,
                precision="bf16",
                output_dir=str(root / f"b{bs}a{acc}"),
                per_device_batch_size=bs,
                grad_accum=acc,
            )
        )
        r = train(cfg)
        return r.final_loss, load_file(str(r.model_dir / "model.safetensors"))

    (la, pa), (lb, pb) = run(8, 1), run(2, 4)
    init = load_file(str(root / "model" / "model.safetensors"))
    worst = max(float((pa[k] - pb[k]).abs().max() / (pb[k] - init[k]).abs().max().clamp_min(1e-30)) for k in pb)
    loss_rel = abs(la - lb) / abs(lb)
    return {"loss_rel": loss_rel, "param_worst_rel": worst, "ok": loss_rel <= BF16_U and worst <= BF16_PARAM_TOL}


def part_loss_bench() -> dict:
    need_cuda()
    import torch
    import torch.nn.functional as F

    from witune.loss import weighted_nll_from_hidden

    n, hidden, vocab = 8192, 2048, 128256
    g = torch.Generator(device="cuda").manual_seed(0)
    h0 = torch.randn(n, hidden, device="cuda", generator=g, dtype=torch.bfloat16)
    w0 = (torch.randn(vocab, hidden, device="cuda", generator=g) * hidden**-0.5).to(torch.bfloat16)
    labels = torch.randint(0, vocab, (n,), device="cuda", generator=g)
    response = torch.arange(n, device="cuda") >= n // 3
    masked = torch.where(response, labels, -100)
    weights = torch.where(response, 1.0, 0.1)

    cases: dict[str, Callable] = {
        "linear_masked_ce": lambda h, w: F.cross_entropy(F.linear(h, w).float(), masked, reduction="sum"),
        "witune_torch": lambda h, w: weighted_nll_from_hidden(h, w, labels, weights, backend="torch").weighted_sum,
    }
    skipped = {}
    if have("liger_kernel"):
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        flce = LigerFusedLinearCrossEntropyLoss(reduction="sum")
        cases["liger_flce"] = lambda h, w: flce(w, h, masked)
        cases["witune_liger"] = lambda h, w: (
            weighted_nll_from_hidden(h, w, labels, weights, backend="liger").weighted_sum
        )
    else:
        skipped["liger"] = "liger_kernel not installed"
    if have("cut_cross_entropy"):
        from cut_cross_entropy import linear_cross_entropy

        cases["cce"] = lambda h, w: linear_cross_entropy(h, w, masked, reduction="sum")
        cases["witune_cce"] = lambda h, w: weighted_nll_from_hidden(h, w, labels, weights, backend="cce").weighted_sum
    else:
        skipped["cce"] = "cut_cross_entropy not installed"
    if have("trl"):
        try:
            from trl.kernels import ChunkedLogProbFunction
            from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

            def trl_case(h, w):
                out = ChunkedLogProbFunction.apply(
                    h, w, None, masked.clamp(min=0), 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0, ("log_probs",)
                )
                return -out[0].masked_fill(~response, 0).sum()

            cases["trl_chunked"] = trl_case
        except ImportError as e:
            skipped["trl_chunked"] = f"trl has no chunked log-prob kernel here ({e})"
    else:
        skipped["trl_chunked"] = "trl not installed"

    rows = {}
    for name, fn in cases.items():
        try:
            times, peak = [], 0
            for _ in range(3):
                h, w = h0.clone().requires_grad_(True), w0.clone().requires_grad_(True)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                t0 = time.perf_counter()
                fn(h, w).backward()
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
                peak = max(peak, torch.cuda.max_memory_allocated() - base)
                del h, w
            rows[name] = {"ms": 1000 * statistics.median(times[1:]), "peak_mib": peak / 2**20}
        except Exception as e:  # one rival failing (a kernel's version, memory) must not hide the others
            rows[name] = {"error": f"{type(e).__name__}: {e}"}
    return {"tokens": n, "hidden": hidden, "vocab": vocab, "cases": rows, "skipped": skipped}


def part_train_bench(steps: int) -> dict:
    need_cuda()
    need("trl")
    import torch

    from witune.models import load_model, smollm2_path

    try:
        model = str(smollm2_path())
    except Exception as e:
        raise Skip(f"SmolLM2-135M is not available offline ({type(e).__name__}: {e})") from None
    data = ROOT.parent / "shared" / "data" / "train" / "alpaca_seed_tasks.jsonl"
    if not data.is_file():
        raise Skip(f"training data {data} is absent")
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    params = sum(p.numel() for p in load_model(model).parameters())
    argv = [sys.executable, __file__, "--train-one"]
    common = ["--model", model, "--data", str(data), "--steps", str(steps)]
    out = {}
    for variant in ("witune", "witune_chunked", "trl"):
        res = subprocess.run(argv + [variant, *common], capture_output=True, text=True, timeout=240)
        if res.returncode != 0:
            out[variant] = {"error": res.stderr.strip()[-500:]}
            continue
        tps = json.loads(res.stdout.strip().splitlines()[-1])["tokens_per_s"]
        out[variant] = {"tokens_per_s": tps, "mfu": 6 * params * tps / peak if peak else None}
    return {
        "device": name,
        "params": params,
        "peak_flops": peak,
        "variants": out,
        **({} if peak else {"mfu_skipped": f"no bf16 peak known for {name!r}"}),
    }


def train_one(variant: str, model: str, data: str, steps: int) -> float:
    """Median tokens/s of one training run (subprocess entry)."""
    if variant.startswith("witune"):
        with tempfile.TemporaryDirectory() as out:
            sets = dict(
                model=model,
                data=data,
                template="chat",
                max_length=512,
                per_device_batch_size=8,
                max_steps=steps,
                precision="bf16",
                chunked_loss=variant == "witune_chunked",
                learning_rate=2e-5,
                output_dir=out,
                progress=False,
            )
            cmd = [sys.executable, "-m", "witune.cli.main", "train"]
            for k, v in sets.items():
                cmd += ["--set", f"{k}={str(v).lower() if isinstance(v, bool) else v}"]
            subprocess.run(cmd, check=True, capture_output=True)
            rates = [json.loads(ln)["tokens_per_s"] for ln in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        return statistics.median(rates[1:] or rates)
    import datasets
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from witune.data import load_examples
    from witune.models import load_model, load_tokenizer

    tok, net = load_tokenizer(model), load_model(model)
    records = [
        {
            "prompt": [{"role": m.role, "content": m.content} for m in ex.messages[:-1]],
            "completion": [{"role": "assistant", "content": ex.messages[-1].content}],
        }
        for ex in load_examples(data).examples
    ]
    rates, state = [], {}

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            import torch

            torch.cuda.synchronize()
            state["t"] = time.perf_counter()

        def on_step_end(self, *a, **k):
            import torch

            torch.cuda.synchronize()
            rates.append(state.pop("tokens", 0) / (time.perf_counter() - state["t"]))

    with tempfile.TemporaryDirectory() as out:
        cfg = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=8,
            max_steps=steps,
            max_length=512,
            bf16=True,
            report_to=[],
            save_strategy="no",
            logging_steps=1000,
            seed=42,
        )
        trainer = SFTTrainer(
            model=net,
            args=cfg,
            train_dataset=datasets.Dataset.from_list(records),
            processing_class=tok,
            callbacks=[Timer()],
        )
        collate = trainer.data_collator

        def counting(features):
            batch = collate(features)
            state["tokens"] = int(batch["attention_mask"].sum())
            return batch

        trainer.data_collator = counting
        trainer.train()
    return statistics.median(rates[1:] or rates)


def run_part(name: str, fn: Callable[[], dict], cap_s: int) -> dict:
    t0 = time.perf_counter()
    try:
        result = {"status": "ok", **fn()}
    except Skip as e:
        result = {"status": "skipped", "reason": str(e)}
    except Exception as e:
        result = {"status": "failed", "reason": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    result["seconds"] = time.perf_counter() - t0
    if result["seconds"] > cap_s:
        result["over_cap"] = f"took {result['seconds']:.0f} s, cap {cap_s} s"
    print(f"{name}: {result['status']}" + (f" ({result['reason']})" if "reason" in result else ""), flush=True)
    return result


def table(results: dict) -> str:
    lines = [BEGIN, "", f"GPU check of {results['date']} ({results['device']}), `python bench/gpu_check.py`:", ""]
    lines += ["| part | status | result |", "|---|---|---|"]
    for name, r in results["parts"].items():
        if r["status"] != "ok":
            summary = r.get("reason", "")
        elif name == "loss_bench":
            summary = "; ".join(
                f"{c}: {v['ms']:.1f} ms, {v['peak_mib']:.0f} MiB" if "ms" in v else f"{c}: {v['error'][:80]}"
                for c, v in r["cases"].items()
            )
        elif name == "train_bench":
            summary = "; ".join(
                f"{v_name}: {v['tokens_per_s']:.0f} tok/s" + (f", MFU {v['mfu']:.1%}" if v.get("mfu") else "")
                if "tokens_per_s" in v
                else f"{v_name}: failed"
                for v_name, v in r["variants"].items()
            )
        else:
            summary = ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in r.items()
                if k not in ("status", "seconds") and not isinstance(v, dict)
            )
            summary += "".join(
                f"; {k}: " + ", ".join(f"{a}={b:.2e}" for a, b in v.items())
                for k, v in r.items()
                if isinstance(v, dict) and all(isinstance(b, float) for b in v.values())
            )
        lines.append(f"| {name} | {r['status']} ({r['seconds']:.0f} s) | {summary.replace('|', '/')} |")
    return "\n".join([*lines, "", END])


def write_benchmarks(path: Path, block: str) -> None:
    text = path.read_text() if path.is_file() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip() + "\n\n## GPU check\n\n" + block + "\n"
    atomic_write_text(path, text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-install", action="store_true", help="do not pip install the packages the parts use")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check.json"))
    ap.add_argument("--benchmarks", default=str(ROOT / "BENCHMARKS.md"), help="file that gets the results table")
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--train-one", help=argparse.SUPPRESS)  # subprocess entry of train_bench
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--steps", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if args.train_one:
        print(json.dumps({"tokens_per_s": train_one(args.train_one, args.model, args.data, args.steps)}))
        return 0
    import torch

    started = time.perf_counter()
    parts = {"install": run_part("install", lambda: part_install(not args.no_install), 200)}
    parts["backends"] = run_part("backends", part_backends, 60)
    parts["bf16"] = run_part("bf16", part_bf16, 60)
    parts["loss_bench"] = run_part("loss_bench", part_loss_bench, 90)
    parts["train_bench"] = run_part("train_bench", lambda: part_train_bench(args.train_steps), 200)
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device",
        "machine": machine(),
        "seconds": time.perf_counter() - started,
        "parts": parts,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps(results, indent=1))
    write_benchmarks(Path(args.benchmarks), table(results))
    print(f"wrote {args.out} and the table in {args.benchmarks} ({results['seconds']:.0f} s)")
    return 1 if any(p["status"] == "failed" for p in parts.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
