"""Score a kept program on a held-out split: ``python -m trainer.score PROGRAM --split test``.

The report uses it for the test split, which no decision reads: the baseline and every kept
experiment are scored on it from their saved programs, with the same evaluator and checks
as the validation score. Prints one JSON object: the split, bits per byte, tokens scored.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainer.data import SPLITS, CorpusError, prepare_corpus
from trainer.device import resolve_device
from trainer.evaluate import evaluate_program
from trainer.outcomes import HarnessStop
from trainer.program import ProgramError, load_program


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.score", description=__doc__)
    parser.add_argument("program", type=Path, help="an exported model (model.program)")
    parser.add_argument("--split", choices=SPLITS[1:], default="test")
    parser.add_argument("--corpus", default="stdlib")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--seq-len", type=int, required=True)
    parser.add_argument("--eval-tokens", type=int, required=True)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
        corpus = prepare_corpus(args.corpus, args.cache_dir)
        tokens = corpus.load(args.split)
        if len(tokens) <= args.seq_len:
            raise CorpusError(
                f"the corpus's {args.split} split holds {len(tokens)} tokens, fewer than one "
                f"window of {args.seq_len + 1}; a larger corpus has one"
            )
        program = load_program(args.program, device)
        result = evaluate_program(
            program, tokens, args.seq_len, args.eval_tokens, device, corpus.vocab_size
        )
    except (CorpusError, ProgramError, OSError) as exc:
        print(json.dumps({"error": str(exc)}))
        return 1
    except HarnessStop as stop:
        print(json.dumps({"error": stop.reason, "status": stop.outcome.status}))
        return 1
    print(
        json.dumps(
            {
                "split": args.split,
                "bpb": result.val_bpb,
                "tokens": result.tokens,
                "corpus_fingerprint": corpus.fingerprint,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
