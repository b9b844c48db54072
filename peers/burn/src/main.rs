//! The Rust peer of `rnn-gpu bench`: Burn's `nn::Rnn`, `nn::Lstm` and `nn::Gru` on the same
//! standard cases as `scripts/bench_pytorch.py`, timed the same way and printed in the same table
//! (JSON with --json). Burn runs on wgpu as rnn-gpu does (on lavapipe here, so the two engines
//! meet on one adapter) or on its pure-Rust CPU backend, Flex.
//!
//! A case is a character model: one-hot input of a vocabulary of 65, one recurrent layer of H
//! units, a Linear head, softmax cross-entropy over every step, SGD at 0.05. The training step is
//! forward, loss, backward, the SGD update and reading the loss back; the forward pass alone runs
//! without autodiff and ends with a device sync. Each is the median of --runs (5) after --warmup
//! (3: on wgpu, Burn compiles and autotunes its kernels during the first two calls).
//!
//!     cargo run --release --manifest-path peers/burn/Cargo.toml -- --device wgpu
//!     cargo run --release --manifest-path peers/burn/Cargo.toml -- --device flex

use std::time::Instant;

use burn::module::Module;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::nn::{Gru, GruConfig, Linear, LinearConfig, Lstm, LstmConfig, Rnn, RnnConfig};
use burn::optim::{GradientsParams, SgdConfig};
use burn::prelude::*;
use burn::tensor::DeviceKind;

const VOCAB: usize = 65;
const LEARNING_RATE: f64 = 0.05;
/// (cell, H, B, T), as in ../shared/DESIGN.md and scripts/bench_pytorch.py.
const CASES: [(&str, usize, usize, usize); 4] =
    [("rnn_tanh", 256, 32, 64), ("lstm", 256, 32, 64), ("gru", 256, 32, 64), ("lstm", 512, 64, 100)];

/// The recurrent layer of a case: one of Burn's three cells.
#[derive(Module, Debug)]
enum Cell {
    Rnn(Rnn),
    Lstm(Lstm),
    Gru(Gru),
}

#[derive(Module, Debug)]
struct CharModel {
    cell: Cell,
    head: Linear,
}

impl CharModel {
    fn new(cell: &str, hidden: usize, device: &Device) -> Self {
        let cell = match cell {
            "rnn_tanh" => Cell::Rnn(RnnConfig::new(VOCAB, hidden, true).init(device)),
            "lstm" => Cell::Lstm(LstmConfig::new(VOCAB, hidden, true).init(device)),
            "gru" => Cell::Gru(GruConfig::new(VOCAB, hidden, true).init(device)),
            other => panic!("unknown cell {other} in CASES"),
        };
        CharModel { cell, head: LinearConfig::new(hidden, VOCAB).init(device) }
    }

    /// Token ids (B, T) to logits (B, T, V).
    fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let x = tokens.one_hot::<3>(VOCAB).float();
        let h = match &self.cell {
            Cell::Rnn(rnn) => rnn.forward(x, None).0,
            Cell::Lstm(lstm) => lstm.forward(x, None).0,
            Cell::Gru(gru) => gru.forward(x, None),
        };
        self.head.forward(h)
    }
}

fn gates(cell: &str) -> f64 {
    match cell {
        "lstm" => 4.0,
        "gru" => 3.0,
        _ => 1.0,
    }
}

/// The operation count of scripts/bench_pytorch.py and `rnn-gpu bench`: the recurrent matmul and
/// the head, not the input projection of the one-hot input (a lookup in rnn-gpu, a matmul here);
/// a training step counts three times it.
fn forward_flops(cell: &str, h: usize, b: usize, t: usize) -> f64 {
    2.0 * (t * b) as f64 * (gates(cell) * (h * h) as f64 + (h * VOCAB) as f64)
}

/// Uniform token ids from a fixed-seed xorshift, so that every run sees the same batch.
fn tokens(b: usize, t: usize, seed: u64, device: &Device) -> Tensor<2, Int> {
    let mut s = seed;
    let ids: Vec<i64> = (0..b * t)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % VOCAB as u64) as i64
        })
        .collect();
    Tensor::from_data(TensorData::new(ids, [b, t]), device)
}

/// The median of `runs` timings after `warmup` untimed calls; with `verbose`, every call's time on
/// stderr (Burn compiles and autotunes its kernels during the first calls: this shows when that ends).
fn median_ms(warmup: usize, runs: usize, verbose: bool, what: &str, mut f: impl FnMut()) -> f64 {
    let mut timed = |i: usize| {
        let t0 = Instant::now();
        f();
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        if verbose {
            eprintln!("  {what} call {i}: {ms:.1} ms{}", if i < warmup { " (warm-up)" } else { "" });
        }
        ms
    };
    for i in 0..warmup {
        timed(i);
    }
    let mut ms: Vec<f64> = (warmup..warmup + runs).map(&mut timed).collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

struct Args {
    device: String,
    runs: usize,
    warmup: usize,
    only: Option<String>,
    json: Option<String>,
    verbose: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args { device: "wgpu".into(), runs: 5, warmup: 3, only: None, json: None, verbose: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--device" => args.device = value()?,
            "--runs" => args.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--warmup" => args.warmup = value()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--only" => args.only = Some(value()?),
            "--json" => args.json = Some(value()?),
            "--verbose" => args.verbose = true,
            _ => {
                return Err(format!(
                    "unknown argument {flag}; flags: --device wgpu|flex --runs N --warmup N --only TEXT --json PATH --verbose"
                ));
            }
        }
    }
    if args.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(args)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("burn-peer: {e}");
        std::process::exit(2);
    });
    let device = match args.device.as_str() {
        "wgpu" => Device::wgpu(DeviceKind::DefaultDevice),
        "flex" => Device::flex(),
        other => {
            eprintln!("burn-peer: --device {other}: expected wgpu or flex");
            std::process::exit(2);
        }
    };
    let train_device = device.clone().autodiff();
    println!("Burn 0.22 on {device:?}");
    println!(
        "{:<24} {:<8} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8}",
        "case", "device", "train ms", "tok/s", "GFLOP/s", "fwd ms", "tok/s", "GFLOP/s"
    );
    let mut results = Vec::new();
    for (cell, h, b, t) in CASES {
        let case = format!("{cell} H={h} B={b} T={t}");
        if args.only.as_ref().is_some_and(|o| !case.contains(o.as_str())) {
            continue;
        }
        let mut model = Some(CharModel::new(cell, h, &train_device));
        let mut optimizer = SgdConfig::new().init();
        let loss_fn: CrossEntropyLoss = CrossEntropyLossConfig::new().init(&train_device);
        let x = tokens(b, t, 1, &train_device);
        let y = tokens(b, t, 2, &train_device).reshape([b * t]);
        let mut losses = Vec::new();
        let train_ms = median_ms(args.warmup, args.runs, args.verbose, "train", || {
            let m = model.take().expect("the model is put back after each step");
            let loss = loss_fn.forward(m.forward(x.clone()).reshape([b * t, VOCAB]), y.clone());
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            model = Some(optimizer.step(LEARNING_RATE, m, grads));
            let value: f32 = loss.into_scalar();
            assert!(value.is_finite(), "{case}: loss {value}");
            losses.push(value);
        });
        if args.verbose {
            // SGD on one fixed batch: the loss falls from about ln(65) = 4.17 if the model trains.
            eprintln!(
                "  loss over the {} steps: {:.4} -> {:.4}",
                losses.len(),
                losses[0],
                losses[losses.len() - 1]
            );
        }
        let inference = model.as_ref().expect("the model is back").valid();
        let x_plain = tokens(b, t, 1, &device);
        let forward_ms = median_ms(args.warmup, args.runs, args.verbose, "forward", || {
            let _logits = inference.forward(x_plain.clone());
            device.sync().expect("the device runs the forward pass");
        });
        let ff = forward_flops(cell, h, b, t);
        let tok = (t * b) as f64;
        let row = |ms: f64, flops: f64| (ms, tok / ms * 1e3, flops / ms / 1e6);
        let (tr, tr_tok, tr_gf) = row(train_ms, 3.0 * ff);
        let (fw, fw_tok, fw_gf) = row(forward_ms, ff);
        println!(
            "{case:<24} {:<8} {tr:>10.1} {tr_tok:>10.0} {tr_gf:>8.2} {fw:>10.1} {fw_tok:>10.0} {fw_gf:>8.2}",
            args.device
        );
        results.push(format!(
            "    {{\"case\": \"{case}\", \"train\": {{\"ms\": {tr}, \"tokens_per_sec\": {tr_tok}, \"gflops\": {tr_gf}}}, \
             \"forward\": {{\"ms\": {fw}, \"tokens_per_sec\": {fw_tok}, \"gflops\": {fw_gf}}}}}"
        ));
    }
    if let Some(path) = &args.json {
        let text = format!(
            "{{\n  \"burn\": \"0.22\",\n  \"device\": \"{}\",\n  \"cases\": [\n{}\n  ]\n}}\n",
            format!("{device:?}").replace('"', "'"),
            results.join(",\n")
        );
        // Written whole, then renamed: a failed run never leaves half a file in place of a good one.
        let tmp = format!("{path}.tmp");
        if let Err(e) = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path)) {
            eprintln!("burn-peer: writing {path}: {e}");
            std::process::exit(1);
        }
        println!("wrote {path}");
    }
}
