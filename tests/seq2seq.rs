//! The encoder-decoder: f64 gradient checks through the bridge and the attention, GPU against
//! CPU for the whole training step, beam search against greedy decoding and exhaustive search, bad input,
//! and a small task learned.

mod common;

use common::gpu;
use rnn_gpu::backend::Backend;
use rnn_gpu::distributed::Single;
use rnn_gpu::reference::ReferenceBackend;
use rnn_gpu::rng::Rng;
use rnn_gpu::seq2seq::{S2sExec, Seq2Seq, Seq2SeqSpec};
use rnn_gpu::{Cell, Clip, Device, Optimizer};

fn spec(
    cell: Cell,
    bidirectional: bool,
    attention: bool,
    enc_layers: usize,
    dec_layers: usize,
) -> Seq2SeqSpec {
    Seq2SeqSpec {
        cell,
        src_vocab: 6,
        tgt_vocab: 7,
        embed: 3,
        enc_hidden: 3,
        enc_layers,
        bidirectional,
        dec_hidden: if bidirectional { 4 } else { 3 },
        dec_layers,
        attention,
        dropout: 0.0,
        bos: 5,
        eos: 6,
    }
}

fn pairs(rng: &mut Rng, n: usize, s: &Seq2SeqSpec) -> Vec<(Vec<u32>, Vec<u32>)> {
    (0..n)
        .map(|i| {
            let src: Vec<u32> = (0..2 + (i % 3)).map(|_| rng.below(s.src_vocab) as u32).collect();
            let tgt: Vec<u32> = (0..1 + (i % 4)).map(|_| rng.below(5) as u32).collect();
            (src, tgt)
        })
        .collect()
}

fn loss64(e: &mut S2sExec<ReferenceBackend<f64>>, s: &Seq2SeqSpec, p: &[(Vec<u32>, Vec<u32>)]) -> f64 {
    let layout = s.layout();
    e.evaluate(s, &layout, p, false).unwrap();
    let st = e.net.step_state.clone();
    rnn_gpu::wait::block_on("test", e.be.read(&st)).unwrap()[rnn_gpu::ops::step_state::LOSS]
}

/// Every parameter, through the decoder, the attention, the bridge and the encoder, both
/// embeddings included: central differences in f64 against backpropagation.
fn gradcheck(s: Seq2SeqSpec) {
    let layout = s.layout();
    let init: Vec<f64> = layout.init(3).iter().map(|&v| v as f64).collect();
    let mut e = S2sExec::new(ReferenceBackend::<f64>::new(), &layout, &init).unwrap();
    let p = pairs(&mut Rng::seed_from_u64(4), 3, &s);
    e.evaluate(&s, &layout, &p, true).unwrap();
    let g = e.net.grads.clone();
    let grads = rnn_gpu::wait::block_on("test", e.be.read(&g)).unwrap();
    let params = e.net.params.clone();
    let eps = 1e-6;
    for entry in layout.entries() {
        for i in entry.range() {
            let mut x = init.clone();
            x[i] += eps;
            e.be.write(&params, &x).unwrap();
            let up = loss64(&mut e, &s, &p);
            x[i] -= 2.0 * eps;
            e.be.write(&params, &x).unwrap();
            let down = loss64(&mut e, &s, &p);
            let num = (up - down) / (2.0 * eps);
            let err = (grads[i] - num).abs();
            let allowed = 1e-6 * grads[i].abs().max(num.abs()) + 1e-9;
            assert!(
                err <= allowed,
                "{:?} {}[{}]: backprop {:.10e} finite difference {num:.10e}",
                s.cell,
                entry.name,
                i - entry.offset,
                grads[i]
            );
        }
    }
}

#[test]
fn gradients_through_bridge_and_attention() {
    for cell in [Cell::Lstm, Cell::Gru, Cell::Rnn { relu: false }] {
        gradcheck(spec(cell, true, true, 2, 2));
        gradcheck(spec(cell, false, false, 1, 2));
    }
    gradcheck(spec(Cell::Lstm, true, false, 2, 1));
    gradcheck(spec(Cell::Gru, false, true, 2, 1));
}

#[test]
fn training_step_matches_the_reference() {
    let mut devices = vec![Device::Cpu];
    devices.extend(gpu().map(Device::Gpu));
    for (device, (cell, bidir, attention)) in devices.iter().flat_map(|d| {
        [(Cell::Lstm, true, true), (Cell::Gru, false, true), (Cell::Lstm, false, false)].map(|c| (d, c))
    }) {
        let s = Seq2SeqSpec {
            embed: 8,
            enc_hidden: 8,
            dec_hidden: if bidir { 12 } else { 8 },
            ..spec(cell, bidir, attention, 2, 2)
        };
        let mut g = Seq2Seq::new(s.clone(), device, 1).unwrap();
        let mut c = Seq2Seq::new(s.clone(), &Device::Reference, 1).unwrap();
        for m in [&mut g, &mut c] {
            m.set_optimizer(Optimizer::adam(0.01), Clip { max_norm: 1.0, value: 0.0 }).unwrap();
        }
        let mut rng = Rng::seed_from_u64(5);
        for step in 0..5 {
            let p = pairs(&mut rng, 6, &s);
            g.train_step(&p).unwrap();
            c.train_step(&p).unwrap();
            let (lg, lc) = (g.stats().unwrap().loss, c.stats().unwrap().loss);
            assert!(
                (lg - lc).abs() <= 1e-4 * lc.abs() + 1e-5,
                "{} {cell:?} step {step}: device {lg} reference {lc}",
                device.name()
            );
        }
        let p = pairs(&mut rng, 6, &s);
        let (lg, gg) = g.loss_gradients(&p).unwrap();
        let (lc, gc) = c.loss_gradients(&p).unwrap();
        assert!((lg - lc).abs() <= 1e-4 * lc.abs() + 1e-5);
        for ((name, a), (_, b)) in gg.iter().zip(&gc) {
            let scale = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!(
                    (x - y).abs() <= 1e-3 * scale + 1e-3 * y.abs(),
                    "{} {cell:?} {name}[{i}]: device {x} reference {y}",
                    device.name()
                );
            }
        }
    }
}

#[test]
fn beam_of_width_one_is_greedy_and_decoding_agrees_across_devices() {
    let mut devices = vec![Device::Reference, Device::Cpu];
    devices.extend(gpu().map(Device::Gpu));
    let s = Seq2SeqSpec { embed: 8, enc_hidden: 8, dec_hidden: 12, ..spec(Cell::Lstm, true, true, 2, 1) };
    let sources: Vec<Vec<u32>> = vec![vec![1, 2, 3], vec![4, 0], vec![2, 2, 2, 2, 1]];
    let mut outputs = Vec::new();
    for d in &devices {
        let mut m = Seq2Seq::new(s.clone(), d, 9).unwrap();
        let greedy = m.greedy(&sources, 12).unwrap();
        let beam1 = m.beam(&sources, 1, 12).unwrap();
        assert_eq!(greedy, beam1, "beam width 1 differs from greedy on {}", d.describe());
        let beam3 = m.beam(&sources, 3, 12).unwrap();
        assert_eq!(beam3.len(), 3);
        outputs.push((greedy, beam3));
    }
    for (o, d) in outputs.iter().zip(&devices).skip(1) {
        assert_eq!(&outputs[0], o, "decoding differs between the reference and {}", d.name());
    }
}

/// The length-normalised log-probability beam search maximises: minus the mean cross-entropy per
/// target token, EOS included.
fn score(m: &mut Seq2Seq, src: &[u32], out: &[u32]) -> f32 {
    -m.evaluate(&[(src.to_vec(), out.to_vec())]).unwrap()
}

/// Every sequence of up to `max_len - 1` tokens other than EOS: those that end within `max_len`
/// decoding steps.
fn every_sequence(s: &Seq2SeqSpec, max_len: usize) -> Vec<Vec<u32>> {
    let tokens: Vec<u32> = (0..s.tgt_vocab as u32).filter(|&t| t != s.eos).collect();
    let mut all = vec![Vec::new()];
    let mut frontier = vec![Vec::new()];
    for _ in 1..max_len {
        frontier = frontier
            .iter()
            .flat_map(|p: &Vec<u32>| tokens.iter().map(move |&t| [p.as_slice(), &[t]].concat()))
            .collect();
        all.extend(frontier.iter().cloned());
    }
    all
}

/// With a beam as wide as the number of sequences, beam search is exhaustive: it must find the
/// best length-normalised sequence of an exhaustive search, on random untrained models.
#[test]
fn a_wide_enough_beam_finds_the_exhaustive_best() {
    let s = Seq2SeqSpec { tgt_vocab: 4, bos: 2, eos: 3, ..spec(Cell::Lstm, false, true, 1, 1) };
    let max_len = 4;
    let all = every_sequence(&s, max_len);
    assert_eq!(all.len(), 1 + 3 + 9 + 27);
    for seed in 0..4 {
        let mut m = Seq2Seq::new(s.clone(), &Device::Cpu, seed).unwrap();
        for src in [vec![1u32, 4, 0], vec![3, 3]] {
            let (best, best_score) = all
                .iter()
                .map(|seq| (seq.clone(), score(&mut m, &src, seq)))
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap();
            let found = m.beam(std::slice::from_ref(&src), all.len(), max_len).unwrap().remove(0);
            let got = score(&mut m, &src, &found);
            assert!(
                got >= best_score - 1e-5,
                "seed {seed}: beam found {found:?} scoring {got}, exhaustive search {best:?} scoring {best_score}"
            );
        }
    }
}

/// Widening the beam never ends on a worse hypothesis than greedy decoding, where greedy ends.
#[test]
fn a_wider_beam_never_scores_worse_than_greedy() {
    let s = Seq2SeqSpec { tgt_vocab: 5, bos: 3, eos: 4, ..spec(Cell::Gru, true, true, 1, 1) };
    let max_len = 6;
    let mut rng = Rng::seed_from_u64(5);
    let mut compared = 0;
    for seed in 0..6 {
        let mut m = Seq2Seq::new(s.clone(), &Device::Cpu, seed).unwrap();
        let sources: Vec<Vec<u32>> =
            (0..4).map(|i| (0..2 + i).map(|_| rng.below(s.src_vocab) as u32).collect()).collect();
        let greedy = m.greedy(&sources, max_len).unwrap();
        for width in 2..=6 {
            let beam = m.beam(&sources, width, max_len).unwrap();
            for (i, src) in sources.iter().enumerate() {
                if greedy[i].len() >= max_len {
                    continue; // greedy never ended: its hypothesis has no full score
                }
                let (g, b) = (score(&mut m, src, &greedy[i]), score(&mut m, src, &beam[i]));
                assert!(
                    b >= g - 1e-5,
                    "seed {seed}, width {width}: beam {:?} scores {b}, greedy {:?} scores {g}",
                    beam[i],
                    greedy[i]
                );
                compared += 1;
            }
        }
    }
    assert!(compared >= 40, "only {compared} comparisons: greedy rarely ended");
}

#[test]
fn bad_input_is_refused_with_the_value_named() {
    let s = spec(Cell::Gru, false, true, 1, 1);
    let mut m = Seq2Seq::new(s, &Device::Cpu, 1).unwrap();
    let e = m.train_step(&[(vec![1, 2], vec![9])]).err().unwrap().to_string();
    assert!(e.contains("target id in sequence 0") && e.contains("= 9"), "{e}");
    let e = m.train_step(&[(vec![1, 2], vec![1]), (vec![], vec![1])]).err().unwrap().to_string();
    assert!(e.contains("source sequence 1 is empty"), "{e}");
    let e = m.train_step(&[]).err().unwrap().to_string();
    assert!(e.contains("empty batch"), "{e}");
    let e = m.greedy(&[vec![6]], 5).err().unwrap().to_string();
    assert!(e.contains("source id in sequence 0") && e.contains("= 6"), "{e}");
    assert!(m.beam(&[vec![1]], 0, 5).is_err());
    let bad = Seq2SeqSpec { bos: 7, ..spec(Cell::Gru, false, true, 1, 1) };
    assert!(Seq2Seq::new(bad, &Device::Cpu, 1).is_err());
}

/// Reversing sequences of 2 to 6 symbols: with attention a small model learns it exactly in 1000
/// steps (200/200 measured on lavapipe).
#[test]
fn learns_to_reverse_with_attention() {
    let device = gpu().map(Device::Gpu).unwrap_or(Device::Cpu);
    let s = Seq2SeqSpec {
        cell: Cell::Gru,
        src_vocab: 5,
        tgt_vocab: 7,
        embed: 16,
        enc_hidden: 32,
        enc_layers: 1,
        bidirectional: true,
        dec_hidden: 32,
        dec_layers: 1,
        attention: true,
        dropout: 0.0,
        bos: 5,
        eos: 6,
    };
    let mut m = Seq2Seq::new(s, &device, 2).unwrap();
    m.set_optimizer(Optimizer::adam(0.005), Clip { max_norm: 1.0, value: 0.0 }).unwrap();
    let mut rng = Rng::seed_from_u64(3);
    let mut sample = |n: usize| -> Vec<(Vec<u32>, Vec<u32>)> {
        (0..n)
            .map(|_| {
                let len = 2 + rng.below(5);
                let src: Vec<u32> = (0..len).map(|_| rng.below(5) as u32).collect();
                let tgt: Vec<u32> = src.iter().rev().copied().collect();
                (src, tgt)
            })
            .collect()
    };
    for _ in 0..1000 {
        m.train_step(&sample(32)).unwrap();
    }
    let test = sample(100);
    let sources: Vec<Vec<u32>> = test.iter().map(|p| p.0.clone()).collect();
    let out = m.greedy(&sources, 10).unwrap();
    let correct = out.iter().zip(&test).filter(|(o, p)| **o == p.1).count();
    assert!(correct >= 95, "{correct}/100 reversed exactly");
}

#[test]
fn model_files_round_trip_and_refuse_other_kinds() {
    let dir = std::env::temp_dir().join(format!("rnn-gpu-s2s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let s = spec(Cell::Lstm, true, true, 2, 1);
    let mut m = Seq2Seq::new(s.clone(), &Device::Cpu, 4).unwrap();
    let path = dir.join("m.safetensors");
    let mut extra = rnn_gpu::io::Metadata::new();
    extra.insert("note".into(), "x".into());
    m.save(&path, &extra).unwrap();
    let (mut back, meta) = Seq2Seq::load(&path, &Device::Cpu).unwrap();
    assert_eq!(back.spec(), &s);
    assert_eq!(meta["note"], "x");
    let src = vec![vec![1, 2, 3]];
    assert_eq!(back.greedy(&src, 8).unwrap(), m.greedy(&src, 8).unwrap());
    // A plain model file is not an encoder-decoder.
    let mut plain =
        rnn_gpu::Model::new(rnn_gpu::ModelSpec::char_model(Cell::Gru, 5, 4, 1), &Device::Cpu, 1).unwrap();
    let p2 = dir.join("plain.safetensors");
    rnn_gpu::io::save_model(&p2, &mut plain, &Default::default()).unwrap();
    let e = Seq2Seq::load(&p2, &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("not a sequence-to-sequence model"), "{e}");
}

/// Training on pairs stopped between evaluations (as Ctrl-C does) and resumed from its
/// checkpoint ends with the same weights and the same best model as a run never stopped.
#[test]
fn pair_training_stopped_and_resumed_matches_an_unbroken_run() {
    use rnn_gpu::seq2seq::train::{PairTrainConfig, train_pairs};
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = common::test_dir("pair-resume");
    let pairs = dir.join("pairs.tsv");
    let words = ["abc", "ba", "cab", "bca", "aab", "ccb", "acb", "bb", "ca", "abcab"];
    let text: String = (0..10)
        .flat_map(|_| words.iter().map(|w| format!("{w}\t{}\n", w.chars().rev().collect::<String>())))
        .collect();
    std::fs::write(&pairs, text).unwrap();
    let config = |out: &str, resume: bool| PairTrainConfig {
        pairs: pairs.clone(),
        out: dir.join(out),
        cell: Cell::Lstm,
        embed: 4,
        hidden: 8,
        layers: 1,
        bidirectional: true,
        attention: true,
        batch: 8,
        steps: 120,
        lr: 0.01,
        clip: 1.0,
        eval_every: 40,
        seed: 3,
        resume,
    };
    let never = AtomicBool::new(false);
    let straight =
        train_pairs(&config("straight", false), &Device::Cpu, &Single, &never, &mut |_| {}).unwrap();
    assert_eq!((straight.step, straight.interrupted), (120, false));

    // Stop at the report of step 50, between the evaluations of steps 40 and 80.
    let stop = AtomicBool::new(false);
    let first = train_pairs(&config("stopped", false), &Device::Cpu, &Single, &stop, &mut |p| {
        if p.step == 50 {
            stop.store(true, Ordering::Relaxed);
        }
    })
    .unwrap();
    assert_eq!((first.step, first.interrupted), (50, true));
    let resumed = train_pairs(&config("stopped", true), &Device::Cpu, &Single, &never, &mut |_| {}).unwrap();
    assert_eq!((resumed.step, resumed.best), (120, straight.best));
    for file in ["checkpoint.safetensors", "seq2seq.safetensors"] {
        let a = rnn_gpu::io::read_tensors(&dir.join("straight").join(file)).unwrap();
        let b = rnn_gpu::io::read_tensors(&dir.join("stopped").join(file)).unwrap();
        assert_eq!(a.tensors, b.tensors, "{file}");
    }
}
