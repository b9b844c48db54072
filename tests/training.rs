//! Models trained from fixed seeds learn real tasks, and the state handling of truncated BPTT
//! and streaming is exact.

mod common;

use common::gpu;
use rnn_gpu::data::TextCorpus;
use rnn_gpu::rng::Rng;
use rnn_gpu::{
    Batch, Cell, Clip, Device, Head, InputKind, Loss, Model, ModelSpec, Optimizer, OutputMode, Start,
};

fn shakespeare(chars: usize) -> TextCorpus {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/data/tinyshakespeare.txt")).unwrap();
    TextCorpus::from_text(&text.chars().take(chars).collect::<String>()).unwrap()
}

/// The trivial baseline a character model must beat: the entropy of the next character given the
/// current one, H(next | current), in nats, counted over the whole text. That is what the best
/// bigram table scores on the very text it was counted on, so it is, if anything, too kind to
/// the baseline.
fn bigram_entropy(corpus: &TextCorpus) -> f64 {
    let v = corpus.vocab.len();
    let mut pairs = vec![0u64; v * v];
    let mut firsts = vec![0u64; v];
    for w in corpus.ids.windows(2) {
        pairs[w[0] as usize * v + w[1] as usize] += 1;
        firsts[w[0] as usize] += 1;
    }
    let n = (corpus.ids.len() - 1) as f64;
    let mut h = 0.0;
    for (i, &c) in pairs.iter().enumerate() {
        if c > 0 {
            h -= c as f64 / n * (c as f64 / firsts[i / v] as f64).ln();
        }
    }
    h
}

/// A 1-layer LSTM of 128 units, 300 Adam steps of 16 windows of 32 characters, on the GPU: the
/// validation loss falls from ln(V) = 4.1 to 0.2 nats per character under the bigram entropy of
/// the text (2.40; 2.10 measured on lavapipe on 2026-12-03).
#[test]
fn char_lstm_learns_shakespeare_on_the_gpu() {
    let Some(ctx) = gpu() else { return };
    let corpus = shakespeare(200_000);
    let bigram = bigram_entropy(&corpus);
    let (train, valid) = corpus.split(0.1);
    let spec = ModelSpec::char_model(Cell::Lstm, corpus.vocab.len(), 128, 1);
    let mut m = Model::new(spec, &Device::Gpu(ctx), 1).unwrap();
    m.set_optimizer(Optimizer::adam(1e-2), Clip { max_norm: 5.0, value: 0.0 }).unwrap();
    let mut rng = Rng::seed_from_u64(1);
    let probe = valid.random_batch(&mut Rng::seed_from_u64(2), 64, 32).unwrap();
    let before = m.evaluate(&probe, Start::Fresh).unwrap();
    for _ in 0..300 {
        m.train_step(&train.random_batch(&mut rng, 32, 16).unwrap(), Start::Fresh).unwrap();
    }
    let after = m.evaluate(&probe, Start::Fresh).unwrap() as f64;
    assert!(before > 4.0, "initial loss {before}");
    assert!(
        after < bigram - 0.2,
        "validation loss after 300 steps: {after} (from {before}), bigram {bigram}"
    );
}

/// The same on the CPU device, smaller: 300 steps of a 64-unit GRU get 0.2 nats under the bigram
/// entropy (2.37; 2.04 measured on 2026-12-03).
#[test]
fn char_gru_learns_on_the_cpu_device() {
    let corpus = shakespeare(100_000);
    let bigram = bigram_entropy(&corpus);
    let (train, valid) = corpus.split(0.1);
    let spec = ModelSpec::char_model(Cell::Gru, corpus.vocab.len(), 64, 1);
    let mut m = Model::new(spec, &Device::Cpu, 1).unwrap();
    m.set_optimizer(Optimizer::adam(5e-3), Clip { max_norm: 5.0, value: 0.0 }).unwrap();
    let mut rng = Rng::seed_from_u64(1);
    for _ in 0..300 {
        m.train_step(&train.random_batch(&mut rng, 32, 16).unwrap(), Start::Fresh).unwrap();
    }
    let probe = valid.random_batch(&mut Rng::seed_from_u64(2), 64, 32).unwrap();
    let after = m.evaluate(&probe, Start::Fresh).unwrap() as f64;
    assert!(after < bigram - 0.2, "validation loss after 300 steps: {after}, bigram {bigram}");
}

/// The adding problem (Hochreiter & Schmidhuber): T = 50 random numbers, two of them marked; the
/// target is their sum. Predicting the mean scores the variance, 2/12 = 0.167. A 32-unit LSTM
/// gets far under it in 800 Adam steps (0.002 measured); a vanilla RNN of the same size stays at
/// the baseline (0.16 measured): the vanishing gradient.
fn adding_batch(rng: &mut Rng, steps: usize, batch: usize) -> Batch {
    let mut x = vec![0.0f32; steps * batch * 2];
    let mut y = vec![0.0f32; batch];
    for j in 0..batch {
        let first = rng.below(steps / 2);
        let second = steps / 2 + rng.below(steps / 2);
        for t in 0..steps {
            let v = rng.uniform() as f32;
            x[(t * batch + j) * 2] = v;
            if t == first || t == second {
                x[(t * batch + j) * 2 + 1] = 1.0;
                y[j] += v;
            }
        }
    }
    Batch::dense(steps, batch, x).with_values(y)
}

fn adding_mse(cell: Cell) -> f32 {
    let ctx = gpu().expect("GPU");
    let spec = ModelSpec {
        head: Some(Head { outputs: 1, mode: OutputMode::ManyToOne, loss: Loss::Mse }),
        ..ModelSpec::new(cell, InputKind::Dense(2), 32)
    };
    let mut m = Model::new(spec, &Device::Gpu(ctx), 1).unwrap();
    m.set_optimizer(Optimizer::adam(0.01), Clip { max_norm: 1.0, value: 0.0 }).unwrap();
    let mut rng = Rng::seed_from_u64(1);
    for _ in 0..800 {
        m.train_step(&adding_batch(&mut rng, 50, 32), Start::Fresh).unwrap();
    }
    m.evaluate(&adding_batch(&mut Rng::seed_from_u64(99), 50, 256), Start::Fresh).unwrap()
}

#[test]
fn lstm_solves_the_adding_problem_where_a_vanilla_rnn_does_not() {
    if gpu().is_none() {
        return;
    }
    let lstm = adding_mse(Cell::Lstm);
    let rnn = adding_mse(Cell::Rnn { relu: false });
    assert!(lstm < 0.05, "LSTM test MSE {lstm}, baseline 0.167");
    assert!(rnn > 0.1, "vanilla RNN test MSE {rnn}: expected to stay near the baseline 0.167");
}

/// Truncated BPTT: three chunks of 4 steps, the state carried, give the same outputs and final
/// states as one pass over 12 steps (the gradient stops at chunk boundaries; the forward does not).
#[test]
fn chunks_with_carried_state_equal_one_long_pass() {
    let devices: Vec<Device> = match gpu() {
        Some(ctx) => vec![Device::Gpu(ctx), Device::Cpu],
        None => vec![Device::Cpu],
    };
    for device in devices {
        for cell in [Cell::Lstm, Cell::Gru, Cell::Rnn { relu: false }] {
            let spec = ModelSpec { layers: 2, ..ModelSpec::char_model(cell, 7, 6, 2) };
            let mut m = Model::new(spec, &device, 4).unwrap();
            let mut rng = Rng::seed_from_u64(5);
            let (t, b) = (12, 3);
            let ids: Vec<u32> = (0..t * b).map(|_| rng.below(7) as u32).collect();
            let whole = m.forward(&Batch::tokens(t, b, ids.clone()), Start::Fresh).unwrap();
            let mut outputs = Vec::new();
            let mut last = None;
            for k in 0..3 {
                let chunk = ids[k * 4 * b..(k + 1) * 4 * b].to_vec();
                let start = if k == 0 { Start::Fresh } else { Start::Continue };
                let f = m.forward(&Batch::tokens(4, b, chunk), start).unwrap();
                outputs.extend(f.output.clone());
                last = Some(f);
            }
            let last = last.unwrap();
            for (i, (a, c)) in outputs.iter().zip(&whole.output).enumerate() {
                assert!((a - c).abs() < 1e-5, "{} output {i}: chunked {a} whole {c}", cell.name());
            }
            for (a, c) in last.h_n.iter().zip(&whole.h_n) {
                assert!((a - c).abs() < 1e-5, "{} h_n: chunked {a} whole {c}", cell.name());
            }
            assert_eq!(last.c_n.is_some(), cell == Cell::Lstm, "{}: c_n only for an LSTM", cell.name());
            if let (Some(chunked), Some(whole)) = (&last.c_n, &whole.c_n) {
                assert_eq!(chunked.len(), whole.len());
                for (a, c) in chunked.iter().zip(whole) {
                    assert!((a - c).abs() < 1e-5, "{} c_n: chunked {a} whole {c}", cell.name());
                }
            }
        }
    }
}

/// A chunk of another length continues the same state (workspaces of one batch size share it),
/// and training on streams with carried state learns: over a second pass through the text, the
/// loss of the last 50 chunks is 0.15 nats under the bigram entropy (2.37; 2.05 measured).
#[test]
fn truncated_bptt_training_over_streams() {
    let device = gpu().map(Device::Gpu).unwrap_or(Device::Cpu);
    let corpus = shakespeare(30_000);
    let bigram = bigram_entropy(&corpus);
    let spec = ModelSpec::char_model(Cell::Lstm, corpus.vocab.len(), 32, 1);
    let mut m = Model::new(spec, &device, 2).unwrap();
    m.set_optimizer(Optimizer::adam(1e-2), Clip { max_norm: 5.0, value: 0.0 }).unwrap();
    let chunks = corpus.stream_batches(16, 8);
    let mut losses = Vec::new();
    for _pass in 0..2 {
        for (k, b) in chunks.iter().enumerate() {
            let start = if k == 0 { Start::Fresh } else { Start::Continue };
            losses.push(m.train_step_stats(b, start).unwrap().loss as f64);
        }
    }
    let tail = &losses[losses.len() - 50..];
    let late = tail.iter().sum::<f64>() / tail.len() as f64;
    assert!(late < bigram - 0.15, "loss of the last 50 chunks {late}, first {}, bigram {bigram}", losses[0]);
}

/// Generating from primes of many lengths (more batch shapes than are kept at once, so older
/// ones are dropped and recorded again) gives the same results as on a fresh model.
#[test]
fn dropping_old_batch_shapes_keeps_results() {
    let device = gpu().map(Device::Gpu).unwrap_or(Device::Cpu);
    let spec = ModelSpec::char_model(Cell::Gru, 6, 8, 1);
    let mut m = Model::new(spec.clone(), &device, 3).unwrap();
    let s = rnn_gpu::Sampling { temperature: 0.0, top_k: 0, seed: 0 };
    let prime = |len: usize| -> Vec<u32> { (0..len).map(|i| (i % 6) as u32).collect() };
    let outs: Vec<Vec<u32>> = (1..20).map(|len| m.generate(&prime(len), 4, s).unwrap()).collect();
    let again = m.generate(&prime(5), 4, s).unwrap();
    let mut fresh = Model::new(spec, &device, 3).unwrap();
    assert_eq!(fresh.generate(&prime(5), 4, s).unwrap(), outs[4]);
    assert_eq!(again, outs[4]);
}
