#!/usr/bin/env python3
"""Cordon's redaction engine vs Microsoft Presidio (pattern recognizers only), same corpus, same run.

The corpus is Cordon's own generator (`cordon_redact::corpus::generate(n, seed)`), dumped as
JSON lines by `filters/redact/examples/corpus_dump.rs` with each positive's labelled span and
Cordon's detections (default detector set). Presidio's AnalyzerEngine runs on the same texts with
only EmailRecognizer, CreditCardRecognizer, IbanRecognizer, UsSsnRecognizer, PhoneRecognizer and
IpRecognizer, and the no-op NLP engine (no spaCy model): context enhancement is off, as in any
pattern-only deployment. Fully offline: tldextract uses its bundled suffix-list snapshot, and any
socket connection attempt during the run is an error.

Both tools are scored by one rule per entity type: a labelled span is found if a detection of that
type overlaps it (recall = found / labels); a detection that overlaps no labelled span of its type
is a false positive (precision = detections overlapping a label / all detections of the type).

Throughput: one call per sample (Cordon `Engine::redact`, Presidio `AnalyzerEngine.analyze`), and
again with the samples joined by newlines into ~4 KiB documents (per-call cost amortised); MB/s =
UTF-8 bytes / time of one pass. Rounds interleave Cordon default set, Cordon compared-types-only,
Presidio; Cordon's figure per round is the median of 9 passes inside the example; the ratio is the
median of the per-round ratios. The corpus is PII-dense (a value or near-miss every ~70 bytes), so
both figures are far below what either tool does on ordinary prose.

    python3 bench/presidio/run.py [--n 1000] [--rounds 5]

It creates and uses the project-local virtualenv `.venv-presidio` (pinned requirements.txt beside
this file) and re-executes itself there; the main `.venv` is not touched.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
VENV = ROOT / ".venv-presidio"
REQUIREMENTS = HERE / "requirements.txt"

# Entity types both tools cover: Cordon detector -> type, Presidio entity -> type.
CORDON_TYPE = {"email": "EMAIL", "card": "CARD", "iban": "IBAN", "ssn": "SSN", "phone": "PHONE", "ipv4": "IP", "ipv6": "IP"}
PRESIDIO_TYPE = {
    "EMAIL_ADDRESS": "EMAIL",
    "CREDIT_CARD": "CARD",
    "IBAN_CODE": "IBAN",
    "US_SSN": "SSN",
    "PHONE_NUMBER": "PHONE",
    "IP_ADDRESS": "IP",
}
ROWS = [
    ("EMAIL", "email", "EMAIL_ADDRESS"),
    ("CARD", "card", "CREDIT_CARD"),
    ("IBAN", "iban", "IBAN_CODE"),
    ("SSN", "ssn", "US_SSN"),
    ("PHONE", "phone", "PHONE_NUMBER"),
    ("IP", "ipv4+ipv6", "IP_ADDRESS"),
]


# --------------------------------------------------------------------------- virtualenv


def ensure_venv() -> None:
    """Re-execute inside .venv-presidio, creating it / installing the pinned requirements first."""
    py = VENV / "bin" / "python"
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not py.exists():
        print(f"creating {VENV.relative_to(ROOT)} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    stamp = VENV / ".requirements.sha256"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if not stamp.exists() or stamp.read_text().strip() != want:
        print(f"installing {REQUIREMENTS.relative_to(ROOT)} into {VENV.relative_to(ROOT)} ...", file=sys.stderr)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(REQUIREMENTS)], check=True)
        stamp.write_text(want + "\n")
    os.execv(str(py), [str(py), str(Path(__file__).resolve()), *sys.argv[1:]])


# --------------------------------------------------------------------------- Presidio


def forbid_network() -> None:
    """Fail loudly if anything (tldextract, phonenumbers, ...) tries to reach the network."""
    import socket

    def refuse(*_a, **_k):
        raise RuntimeError("bench/presidio: network access attempted; the Presidio setup must be offline")

    socket.socket.connect = refuse  # type: ignore[method-assign]
    socket.socket.connect_ex = refuse  # type: ignore[method-assign]
    socket.create_connection = refuse  # type: ignore[assignment]


def make_analyzer():
    import tldextract.tldextract as tx
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        PhoneRecognizer,
        UsSsnRecognizer,
    )

    # EmailRecognizer validates with tldextract.extract(); by default that fetches the public
    # suffix list over the network. Use the snapshot bundled with the pinned tldextract, no cache.
    tx.TLD_EXTRACTOR = tx.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)

    registry = RecognizerRegistry(supported_languages=["en"])
    for r in (EmailRecognizer(), CreditCardRecognizer(), IbanRecognizer(), UsSsnRecognizer(), PhoneRecognizer(), IpRecognizer()):
        registry.add_recognizer(r)
    nlp = NoOpNlpEngine(models=[{"lang_code": "en", "model_name": "none"}])
    nlp.load()
    return AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])


def presidio_pass(analyzer, texts: list[str], threshold: float, keep: bool):
    entities = list(PRESIDIO_TYPE)
    out = [] if keep else None
    t0 = time.perf_counter()
    for t in texts:
        res = analyzer.analyze(text=t, language="en", entities=entities, score_threshold=threshold)
        if keep:
            out.append([(PRESIDIO_TYPE[r.entity_type], r.start, r.end, r.score) for r in res])
    return time.perf_counter() - t0, out


def join_docs(texts: list[str], size: int) -> list[str]:
    """The texts joined with newlines into documents of at least `size` bytes (the last may be shorter)."""
    docs, cur, n = [], [], 0
    for t in texts:
        cur.append(t)
        n += len(t.encode("utf-8")) + 1
        if n >= size:
            docs.append("\n".join(cur))
            cur, n = [], 0
    if cur:
        docs.append("\n".join(cur))
    return docs


def presidio_breakdown(analyzer, texts: list[str]) -> list[tuple[str, float]]:
    """Seconds for one pass of each recognizer's own analyze() (no engine around it)."""
    out = []
    for rec in analyzer.registry.recognizers:
        t0 = time.perf_counter()
        for t in texts:
            rec.analyze(t, rec.supported_entities, None)
        out.append((rec.name, time.perf_counter() - t0))
    return out


# --------------------------------------------------------------------------- Cordon


def cargo_target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def build_example() -> Path:
    cmd = ["cargo", "build", "--release", "-p", "cordon-redact", "--example", "corpus_dump"]
    print("$ " + " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return cargo_target_dir() / "release" / "examples" / "corpus_dump"


def cordon_time(exe: Path, corpus: Path, which: str) -> dict:
    out = subprocess.run([str(exe), "--time", "--in", str(corpus), "--set", which, "--runs", "9"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


# --------------------------------------------------------------------------- scoring


def overlaps(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 < b1 and b0 < a1


def score(samples: list[dict], detections: list[list[tuple]]) -> dict:
    """detections[i]: (type, start, end) of sample i, types outside ROWS already dropped."""
    s = {t: Counter() for t, _, _ in ROWS}
    sub = defaultdict(Counter)  # recall per generating detector (ipv4 / ipv6 apart)
    fp_from = {t: Counter() for t, _, _ in ROWS}  # which samples false positives came from
    misses = {t: [] for t, _, _ in ROWS}
    false = {t: [] for t, _, _ in ROWS}
    for smp, dets in zip(samples, detections):
        labels = []
        if smp["positive"] and smp["detector"] in CORDON_TYPE:
            labels.append((CORDON_TYPE[smp["detector"]], smp["label"]["start"], smp["label"]["end"]))
        for typ, l0, l1 in labels:
            hit = any(d[0] == typ and overlaps(d[1], d[2], l0, l1) for d in dets)
            s[typ]["labels"] += 1
            s[typ]["tp" if hit else "fn"] += 1
            sub[smp["detector"]]["tp" if hit else "fn"] += 1
            if not hit:
                misses[typ].append(smp["text"])
        for typ, d0, d1, *_ in dets:
            if any(typ == lt and overlaps(d0, d1, l0, l1) for lt, l0, l1 in labels):
                s[typ]["det_ok"] += 1
            else:
                s[typ]["fp"] += 1
                fp_from[typ][("+" if smp["positive"] else "-") + smp["detector"]] += 1
                false[typ].append((smp["text"], smp["text"][d0:d1]))
    for typ, c in s.items():
        c["recall"] = c["tp"] / c["labels"] if c["labels"] else 1.0
        n = c["det_ok"] + c["fp"]
        c["precision"] = c["det_ok"] / n if n else 1.0
    return {"rows": s, "sub": sub, "fp_from": fp_from, "misses": misses, "false": false}


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="positives and hard negatives per detector (default 1000)")
    ap.add_argument("--seed", default="0xC0D0", help="generator seed (default 0xC0D0, as corpus_report)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    ap.add_argument("--doc-bytes", type=int, default=4096, help="also time the samples joined into documents of this size (0: off)")
    ap.add_argument("--threshold", type=float, default=0.0, help="Presidio score_threshold (default 0: every result)")
    ap.add_argument("--examples", type=int, default=3, help="misses / false positives to print per type and tool")
    ap.add_argument("--no-build", action="store_true", help="use the already-built corpus_dump example")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    args = ap.parse_args()

    forbid_network()
    load_before = Path("/proc/loadavg").read_text().split()[0]
    exe = cargo_target_dir() / "release" / "examples" / "corpus_dump" if args.no_build else build_example()

    with tempfile.TemporaryDirectory(prefix="cordon-presidio-") as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        subprocess.run([str(exe), "--n", str(args.n), "--seed", args.seed, "--out", str(corpus)], check=True)
        samples = [json.loads(line) for line in corpus.open(encoding="utf-8")]
        texts = [s["text"] for s in samples]
        nbytes = sum(len(t.encode("utf-8")) for t in texts)

        analyzer = make_analyzer()
        presidio_pass(analyzer, texts[:500], args.threshold, keep=False)  # warm-up (regex compile, suffix list)

        # Workloads: the samples one call each, and (--doc-bytes) the same samples joined with
        # "\n" into documents of about that size, which shows the per-call cost apart.
        loads = [("samples", corpus, texts)]
        if args.doc_bytes:
            docs = join_docs(texts, args.doc_bytes)
            docs_path = Path(tmp) / "docs.jsonl"
            docs_path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
            loads.append((f"{args.doc_bytes} B documents", docs_path, docs))
        tput = {
            name: {"cordon_default": [], "cordon_compared": [], "presidio": [], "calls": len(tx), "bytes": sum(len(x.encode("utf-8")) for x in tx)}
            for name, _, tx in loads
        }
        pres_dets = None
        for r in range(args.rounds):
            line = []
            for name, path, tx in loads:
                t = tput[name]
                t["cordon_default"].append(cordon_time(exe, path, "default"))
                t["cordon_compared"].append(cordon_time(exe, path, "compared"))
                keep = name == "samples" and pres_dets is None
                secs, kept = presidio_pass(analyzer, tx, args.threshold, keep=keep)
                if keep:
                    pres_dets = kept
                t["presidio"].append(t["bytes"] / secs / 1e6)
                line.append(
                    f"{name}: cordon default {t['cordon_default'][-1]['mb_s']:.1f}, compared {t['cordon_compared'][-1]['mb_s']:.1f}, "
                    f"presidio {t['presidio'][-1]:.3f} MB/s"
                )
            print(f"round {r + 1}/{args.rounds}: " + "; ".join(line), file=sys.stderr)
        breakdown = presidio_breakdown(analyzer, texts)

    cordon_dets = [[(CORDON_TYPE[d["detector"]], d["start"], d["end"]) for d in s["cordon"] if d["detector"] in CORDON_TYPE] for s in samples]
    assert pres_dets is not None
    ours = score(samples, cordon_dets)
    theirs = score(samples, pres_dets)

    versions = {
        "presidio-analyzer": version("presidio-analyzer"),
        "phonenumbers": version("phonenumbers"),
        "tldextract": version("tldextract"),
        "regex": version("regex"),
        "python": platform.python_version(),
    }
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip() or "?"
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    ndet = len({s["detector"] for s in samples})

    print(
        f"Cordon ({commit}{' + uncommitted changes' if dirty else ''}) vs Presidio {versions['presidio-analyzer']} "
        f"(phonenumbers {versions['phonenumbers']}, tldextract {versions['tldextract']}, Python {versions['python']})"
    )
    print(
        f"corpus: corpus::generate({args.n}, {args.seed}): {len(samples)} samples ({args.n} positives + {args.n} hard negatives "
        f"for each of {ndet} detectors), {nbytes / 1e6:.2f} MB; every sample is a negative for the types it is not labelled with"
    )
    print("Cordon: default detector set (as deployed). Presidio: Email, CreditCard, Iban, UsSsn, Phone, Ip recognizers,")
    print(f"  NoOpNlpEngine (no spaCy model, so context enhancement is off), score_threshold {args.threshold:g}.")
    print("match rule: a label is found if a detection of its type overlaps it; a detection overlapping no label of its type is a FP.")
    print()
    hdr = f"{'type (Cordon / Presidio)':<30} {'labels':>6} | {'TP':>5} {'FN':>5} {'FP':>5} {'recall':>7} {'prec.':>7} | {'TP':>5} {'FN':>5} {'FP':>5} {'recall':>7} {'prec.':>7}"
    print(f"{'':<30} {'':>6} | {'Cordon':^37} | {'Presidio':^37}")
    print(hdr)
    print("-" * len(hdr))
    for typ, ours_name, pres_name in ROWS:
        a, b = ours["rows"][typ], theirs["rows"][typ]
        print(
            f"{ours_name + ' / ' + pres_name:<30} {a['labels']:>6} | "
            f"{a['tp']:>5} {a['fn']:>5} {a['fp']:>5} {a['recall']:>7.4f} {a['precision']:>7.4f} | "
            f"{b['tp']:>5} {b['fn']:>5} {b['fp']:>5} {b['recall']:>7.4f} {b['precision']:>7.4f}"
        )
    for d in ("ipv4", "ipv6"):
        a, b = ours["sub"][d], theirs["sub"][d]
        ra = a["tp"] / (a["tp"] + a["fn"]) if a["tp"] + a["fn"] else 1.0
        rb = b["tp"] / (b["tp"] + b["fn"]) if b["tp"] + b["fn"] else 1.0
        print(f"{'  of which ' + d:<30} {a['tp'] + a['fn']:>6} | {a['tp']:>5} {a['fn']:>5} {'':>5} {ra:>7.4f} {'':>7} | {b['tp']:>5} {b['fn']:>5} {'':>5} {rb:>7.4f}")

    med = statistics.median
    print()
    print(f"throughput: {nbytes / 1e6:.2f} MB of samples, {args.rounds} interleaved rounds, median (Cordon: median of 9 passes per round);")
    print("  MB/s = 10^6 bytes of UTF-8 per second, one thread each; ratio = median of the per-round ratios [range]")
    print(f"{'workload':<28} {'tool':<44} {'MB/s':>9} {'µs/call':>9} {'Cordon/Presidio':>16}")
    for name, t in tput.items():
        calls, nb = t["calls"], t["bytes"]
        label = f"{name} ({calls} calls)"
        pres = t["presidio"]
        for key, tool in (("cordon_default", "Cordon, default set"), ("cordon_compared", "Cordon, compared types only")):
            runs = [c["mb_s"] for c in t[key]]
            tool = f"{tool} ({len(t[key][0]['detectors'])} detectors)"
            ratio = [c / p for c, p in zip(runs, pres)]
            mb = med(runs)
            print(
                f"{label:<28} {tool:<44} {mb:>9.2f} {nb / mb / calls:>9.2f} "
                f"{med(ratio):>7.0f}x [{min(ratio):.0f}..{max(ratio):.0f}]"
            )
            label = ""
        mb = med(pres)
        print(f"{'':<28} {'Presidio, 6 pattern recognizers':<44} {mb:>9.3f} {nb / mb / calls:>9.1f}")
    parts = ", ".join(f"{name.removesuffix('Recognizer')} {secs * 1e6 / len(samples):.1f}" for name, secs in breakdown)
    print(f"Presidio per recognizer alone, µs/sample (one pass over the samples after the rounds): {parts}")
    print(f"load average (1 min) before / after: {load_before} / {Path('/proc/loadavg').read_text().split()[0]} on {os.cpu_count()} cores")

    if args.examples:
        print()
        for tool, sc in (("Cordon", ours), ("Presidio", theirs)):
            for typ, _, _ in ROWS:
                src = ", ".join(f"{k} {v}" for k, v in sc["fp_from"][typ].most_common(5))
                if sc["misses"][typ] or src:
                    print(f"{tool} {typ}: FP from [{src}]")
                for t in sc["misses"][typ][: args.examples]:
                    print(f"    missed  {t!r}")
                for t, hit in sc["false"][typ][: args.examples]:
                    print(f"    FP {hit!r:<28} in {t!r}")

    if args.json:
        doc = {
            "date": time.strftime("%Y-%m-%d"),
            "commit": commit,
            "dirty": bool(dirty),
            "versions": versions,
            "n": args.n,
            "seed": args.seed,
            "samples": len(samples),
            "bytes": nbytes,
            "threshold": args.threshold,
            "accuracy": {
                tool: {t: {k: v for k, v in sc["rows"][t].items()} for t, _, _ in ROWS} for tool, sc in (("cordon", ours), ("presidio", theirs))
            },
            "presidio_recognizer_us_per_sample": {name: secs * 1e6 / len(samples) for name, secs in breakdown},
            "throughput_mb_s": {
                name: {k: ([c["mb_s"] for c in v] if k.startswith("cordon") else v) for k, v in t.items() if k not in ("calls", "bytes")} for name, t in tput.items()
            },
        }
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    ensure_venv()
    sys.exit(main())
