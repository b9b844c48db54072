#!/usr/bin/env python3
"""The peer of `rnn-gpu bench`: PyTorch's torch.nn on the same standard cases, with the same
operation count, printed in the same table (and as JSON with --json).

A case is a character model: one-hot input of a vocabulary of 65, one torch.nn.RNN/LSTM/GRU layer
of H units (the last case an LSTM with proj_size P), a Linear head, softmax cross-entropy over every step, SGD. Timed like rnn-gpu: the
training step (zero_grad, forward, loss, backward, step, and reading the loss back), and the
forward pass alone (under no_grad), each the median of --runs after --warmup, synchronised on CUDA.
On a CUDA device torch uses cuDNN.

    python3 scripts/bench_pytorch.py                 # CPU, all of the machine's threads
    python3 scripts/bench_pytorch.py --device cuda   # cuDNN
"""
import argparse
import json
import statistics
import time

import torch

VOCAB = 65
# (cell, H, B, T, P): P is the LSTM's proj_size (0: none).
CASES = [("rnn_tanh", 256, 32, 64, 0), ("lstm", 256, 32, 64, 0), ("gru", 256, 32, 64, 0), ("lstm", 512, 64, 100, 0),
         ("lstm", 512, 64, 100, 256)]
GATES = {"rnn_tanh": 1, "lstm": 4, "gru": 3}
MODULES = {"rnn_tanh": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def forward_flops(cell, h, b, t, p=0):
    """The products of the model's math: W_hh, the projection W_hr when P > 0, the head."""
    if p:
        return 2.0 * t * b * (GATES[cell] * h * p + p * h + p * VOCAB)
    return 2.0 * t * b * (GATES[cell] * h * h + h * VOCAB)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--only", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"PyTorch {torch.__version__} on {name}")
    print(f"{'case':<24} {'device':<8} {'train ms':>10} {'tok/s':>10} {'GFLOP/s':>8} {'fwd ms':>10} {'tok/s':>10} {'GFLOP/s':>8}")
    results = []
    for cell, h, b, t, p in CASES:
        case = f"{cell} H={h}" + (f" P={p}" if p else "") + f" B={b} T={t}"
        if args.only and args.only not in case:
            continue
        torch.manual_seed(1)
        rnn = (MODULES[cell](VOCAB, h, proj_size=p) if p else MODULES[cell](VOCAB, h)).to(dev)
        head = torch.nn.Linear(p or h, VOCAB).to(dev)
        opt = torch.optim.SGD(list(rnn.parameters()) + list(head.parameters()), lr=0.05)
        x = torch.randint(0, VOCAB, (t, b), device=dev)
        y = torch.randint(0, VOCAB, (t, b), device=dev)

        def train():
            opt.zero_grad()
            out, _ = rnn(torch.nn.functional.one_hot(x, VOCAB).float())
            loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, VOCAB), y.reshape(-1))
            loss.backward()
            opt.step()
            return loss.item()

        def forward():
            with torch.no_grad():
                out, _ = rnn(torch.nn.functional.one_hot(x, VOCAB).float())
                head(out)
            sync()

        def timed(fn):
            for _ in range(args.warmup):
                fn()
            sync()
            ts = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                fn()
                sync()
                ts.append(time.perf_counter() - t0)
            return statistics.median(ts)

        tr, fw = timed(train), timed(forward)
        ff = forward_flops(cell, h, b, t, p)
        tok = t * b
        print(f"{case:<24} {'torch':<8} {tr * 1e3:>10.1f} {tok / tr:>10.0f} {3 * ff / tr / 1e9:>8.2f} {fw * 1e3:>10.1f} {tok / fw:>10.0f} {ff / fw / 1e9:>8.2f}")
        results.append({"case": case, "train": {"ms": tr * 1e3, "tokens_per_sec": tok / tr, "gflops": 3 * ff / tr / 1e9},
                        "forward": {"ms": fw * 1e3, "tokens_per_sec": tok / fw, "gflops": ff / fw / 1e9}})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": name, "cases": results}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
