//! Data parallelism: N ranks with their shares of each batch take the same steps, to rounding, as
//! one rank with the whole batch, on every device. The ranks here are threads
//! (`distributed::ThreadGroup`); tests/mpi.rs runs the same under `mpirun`.

mod common;

use common::devices;
use rnn_gpu::distributed::{Collective, ThreadGroup, share};
use rnn_gpu::rng::Rng;
use rnn_gpu::seq2seq::{Seq2Seq, Seq2SeqSpec};
use rnn_gpu::{Batch, Cell, Clip, Device, Model, ModelSpec, Optimizer, OutputMode, Start};

const STEPS: usize = 4;
const VOCAB: usize = 7;

/// A batch of 5 sequences of up to 6 steps with ragged lengths, so that the ranks' shares weigh
/// differently (3 and 2 sequences, unequal token counts), learned step after step.
fn batches() -> Vec<Batch> {
    let mut rng = Rng::seed_from_u64(11);
    let (t, b) = (6, 5);
    let ids = (0..t * b).map(|_| rng.below(VOCAB) as u32).collect();
    let targets = (0..t * b).map(|_| rng.below(VOCAB) as u32).collect();
    let lengths = (0..b).map(|_| 1 + rng.below(t)).collect();
    vec![Batch::tokens(t, b, ids).with_classes(targets).with_lengths(lengths); STEPS]
}

fn spec() -> ModelSpec {
    ModelSpec { bidirectional: true, ..ModelSpec::char_model(Cell::Lstm, VOCAB, 10, 2) }
}

/// Losses after each step, and the final weights.
type Run = (Vec<f32>, Vec<f32>);

/// `ranks` ranks, each in its own thread, train on their shares of `batches`; every rank's run.
fn train_model(device: &Device, ranks: usize, optimizer: Optimizer) -> Vec<Run> {
    let handles: Vec<_> = ThreadGroup::new(ranks)
        .unwrap()
        .into_iter()
        .map(|comm| {
            let device = device.clone();
            std::thread::spawn(move || {
                let mut model = Model::new(spec(), &device, 5).unwrap();
                model.set_optimizer(optimizer, Clip { max_norm: 0.5, value: 0.0 }).unwrap();
                let mut losses = Vec::new();
                for (i, b) in batches().iter().enumerate() {
                    // The state carried from step to step, each rank its own sequences'.
                    let start = if i == 0 { Start::Fresh } else { Start::Continue };
                    if ranks == 1 {
                        model.train_step(b, start).unwrap();
                    } else {
                        let shard = b.shard(OutputMode::ManyToMany, comm.rank(), ranks).unwrap();
                        model.train_step_distributed(&shard, start, &comm).unwrap();
                    }
                    losses.push(model.stats().unwrap().loss);
                }
                (losses, model.flat_params().unwrap())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Every rank ends with the same bits, and within `tol` of the one-rank run.
fn assert_same_run(single: &Run, ranks: &[Run], tol: f32, what: &str) {
    for (r, run) in ranks.iter().enumerate() {
        assert_eq!(run, &ranks[0], "{what}: rank {r} differs from rank 0");
    }
    let (dl, dw) = (max_diff(&single.0, &ranks[0].0), max_diff(&single.1, &ranks[0].1));
    assert!(dl <= tol && dw <= tol, "{what}: losses differ by {dl}, weights by {dw} (tolerance {tol})");
}

#[test]
fn ranks_take_the_steps_of_one_rank_with_the_whole_batch() {
    for device in devices() {
        for optimizer in [Optimizer::sgd(0.5, 0.9), Optimizer::adam(1e-2)] {
            let single = &train_model(&device, 1, optimizer)[0];
            let what = format!("{} {optimizer:?}", device.name());
            assert!(single.0[STEPS - 1] < single.0[0], "{what}: no learning: {:?}", single.0);
            for ranks in [2, 3] {
                assert_same_run(single, &train_model(&device, ranks, optimizer), 1e-5, &what);
            }
        }
    }
}

fn train_seq2seq(device: &Device, ranks: usize) -> Vec<Run> {
    let spec = Seq2SeqSpec {
        cell: Cell::Gru,
        src_vocab: 6,
        tgt_vocab: 7,
        embed: 5,
        enc_hidden: 8,
        enc_layers: 1,
        bidirectional: true,
        dec_hidden: 8,
        dec_layers: 1,
        attention: true,
        dropout: 0.0,
        bos: 5,
        eos: 6,
    };
    let mut rng = Rng::seed_from_u64(4);
    let seq = |rng: &mut Rng, vocab: usize| -> Vec<u32> {
        (0..1 + rng.below(5)).map(|_| rng.below(vocab) as u32).collect()
    };
    let pairs: Vec<Vec<(Vec<u32>, Vec<u32>)>> =
        (0..STEPS).map(|_| (0..5).map(|_| (seq(&mut rng, 5), seq(&mut rng, 5))).collect()).collect();
    let handles: Vec<_> = ThreadGroup::new(ranks)
        .unwrap()
        .into_iter()
        .map(|comm| {
            let (device, pairs, spec) = (device.clone(), pairs.clone(), spec.clone());
            std::thread::spawn(move || {
                let mut model = Seq2Seq::new(spec, &device, 9).unwrap();
                model.set_optimizer(Optimizer::adam(1e-2), Clip { max_norm: 1.0, value: 0.0 }).unwrap();
                let mut losses = Vec::new();
                for batch in &pairs {
                    if ranks == 1 {
                        model.train_step(batch).unwrap();
                    } else {
                        let mine = share(batch.len(), comm.rank(), ranks).unwrap();
                        model.train_step_distributed(&batch[mine], &comm).unwrap();
                    }
                    losses.push(model.stats().unwrap().loss);
                }
                (losses, model.flat_params().unwrap())
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn seq2seq_ranks_take_the_steps_of_one_rank() {
    for device in devices() {
        let single = &train_seq2seq(&device, 1)[0];
        assert_same_run(single, &train_seq2seq(&device, 2), 1e-5, device.name());
    }
}

#[test]
fn a_batch_too_small_for_its_ranks_is_refused() {
    let b = Batch::tokens(2, 2, vec![0; 4]).with_classes(vec![0; 4]);
    let e = b.shard(OutputMode::ManyToMany, 0, 3).unwrap_err().to_string();
    assert!(e.contains("each rank needs at least one of the batch's 2 sequences"), "{e}");
    let one = b.shard(OutputMode::ManyToMany, 1, 2).unwrap();
    assert_eq!((one.batch, one.steps), (1, 2));
    // A batch whose arrays do not fit its shape is refused, not sliced.
    let e = b.clone().with_lengths(vec![2]).shard(OutputMode::ManyToMany, 0, 2).unwrap_err().to_string();
    assert!(e.contains("1 lengths for 2 sequences"), "{e}");
    let ragged = Batch::tokens(2, 2, vec![0; 3]);
    let e = ragged.shard(OutputMode::ManyToMany, 0, 2).unwrap_err().to_string();
    assert!(e.contains("input holds 3 values, not 2 rows of 2 sequences"), "{e}");
}
