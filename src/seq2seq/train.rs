//! Training an encoder-decoder on a file of tab-separated (source, target) text pairs: the engine
//! of `rnn-gpu seq2seq`. Character vocabularies come from the pairs; 5% of them are held out, and
//! every `eval_every` steps the held-out exact-match accuracy (greedy decoding) is measured and
//! the best model saved with its vocabularies.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{Seq2Seq, Seq2SeqSpec};
use crate::data::{PairVocab, read_pairs};
use crate::distributed::{self, Collective};
use crate::error::{Error, Result, check_nonzero};
use crate::io::Metadata;
use crate::model::Device;
use crate::model::spec::Cell;
use crate::rng::Rng;
use crate::update::{Clip, Optimizer};

#[derive(Clone, Debug)]
pub struct PairTrainConfig {
    pub pairs: PathBuf,
    pub out: PathBuf,
    pub cell: Cell,
    pub embed: usize,
    pub hidden: usize,
    pub layers: usize,
    pub bidirectional: bool,
    pub attention: bool,
    pub batch: usize,
    pub steps: usize,
    pub lr: f32,
    pub clip: f32,
    pub eval_every: usize,
    pub seed: u64,
    /// Continue from out/checkpoint.safetensors.
    pub resume: bool,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct PairSummary {
    pub step: usize,
    /// The best held-out exact-match accuracy (none before the first evaluation).
    pub best: Option<f64>,
    pub best_model: PathBuf,
    pub interrupted: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PairProgress {
    pub step: usize,
    pub loss: f32,
    /// On evaluation steps: held-out exact-match accuracy.
    pub accuracy: Option<f64>,
    pub elapsed: f64,
}

/// The model file's metadata keys for the vocabularies.
pub const SRC_VOCAB: &str = "src_chars";
pub const TGT_VOCAB: &str = "tgt_chars";

pub fn vocab_metadata(v: &PairVocab) -> Metadata {
    let mut m = Metadata::new();
    m.insert(SRC_VOCAB.into(), v.src.iter().collect());
    m.insert(TGT_VOCAB.into(), v.tgt.iter().collect());
    m
}

/// The vocabularies of a model file, checked against its model: sizes, no character twice, and
/// BOS and EOS just past the target characters.
pub fn vocab_from_metadata(path: &Path, m: &Metadata, spec: &Seq2SeqSpec) -> Result<PairVocab> {
    let (Some(s), Some(t)) = (m.get(SRC_VOCAB), m.get(TGT_VOCAB)) else {
        return Err(Error::file(path, "no character vocabularies in the metadata"));
    };
    let vocab = PairVocab {
        src: crate::data::checked_vocab(path, "source", s, spec.src_vocab)?,
        tgt: crate::data::checked_vocab(path, "target", t, spec.tgt_vocab.saturating_sub(2))?,
    };
    if (vocab.bos(), vocab.eos()) != (spec.bos, spec.eos) {
        return Err(Error::file(
            path,
            format!(
                "bos = {} and eos = {} do not follow the {} target characters",
                spec.bos,
                spec.eos,
                vocab.tgt.len()
            ),
        ));
    }
    Ok(vocab)
}

/// Exact-match accuracy of greedy decoding on `pairs` (in batches of 64).
pub fn accuracy(
    model: &mut Seq2Seq,
    vocab: &PairVocab,
    pairs: &[(String, String)],
    max_len: usize,
) -> Result<f64> {
    let mut correct = 0;
    for chunk in pairs.chunks(64) {
        let src: Vec<Vec<u32>> = chunk.iter().map(|p| vocab.encode_src(&p.0)).collect::<Result<_>>()?;
        let out = model.greedy(&src, max_len)?;
        correct += out.iter().zip(chunk).filter(|(o, p)| vocab.decode_tgt(o) == p.1).count();
    }
    Ok(correct as f64 / pairs.len().max(1) as f64)
}

fn check(cfg: &PairTrainConfig) -> Result<()> {
    const OP: &str = "seq2seq train";
    for (what, v) in [
        ("embed", cfg.embed),
        ("hidden", cfg.hidden),
        ("layers", cfg.layers),
        ("batch", cfg.batch),
        ("steps", cfg.steps),
        ("eval_every", cfg.eval_every),
    ] {
        check_nonzero(OP, what, v)?;
    }
    if cfg.batch > MAX_BATCH {
        return Err(Error::range(OP, "batch", cfg.batch, format!("at most {MAX_BATCH} pairs")));
    }
    Optimizer::adam(cfg.lr).validate()?;
    Clip { max_norm: cfg.clip, value: 0.0 }.validate()
}

/// The most pairs in one training batch.
pub const MAX_BATCH: usize = 1 << 16;

const CHECKPOINT: &str = "checkpoint.safetensors";
const BEST: &str = "seq2seq.safetensors";

/// Trains (or resumes) as `cfg` says. Every `eval_every` steps the held-out accuracy is measured,
/// the best model saved and a checkpoint written; a raised `stop` (Ctrl-C) saves a checkpoint and
/// returns. As one of the ranks of `comm` (`distributed::Single` alone): every rank draws the same
/// batch and trains on its share of it (`Seq2Seq::train_step_distributed`); rank 0 alone evaluates
/// and writes the files.
pub fn train_pairs(
    cfg: &PairTrainConfig,
    device: &Device,
    comm: &dyn Collective,
    stop: &AtomicBool,
    on_progress: &mut dyn FnMut(&PairProgress),
) -> Result<PairSummary> {
    check(cfg)?;
    let (rank, ranks) = (comm.rank(), comm.size());
    if rank == 0 {
        std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    }
    let (checkpoint_path, best_path) = (cfg.out.join(CHECKPOINT), cfg.out.join(BEST));
    let resumed = if cfg.resume { Some(Seq2Seq::load_checkpoint(&checkpoint_path, device)?) } else { None };
    let num = |meta: &Metadata, key: &str| -> Result<u64> { crate::io::parse(&checkpoint_path, meta, key) };
    // The held-out split comes from the seed; a resumed run takes the checkpoint's.
    let seed = match &resumed {
        Some((_, meta)) => num(meta, "train.seed")?,
        None => cfg.seed,
    };
    let all = read_pairs(&cfg.pairs)?;
    let vocab = PairVocab::from_pairs(&all);
    let mut rng = Rng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..all.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let n_valid = (all.len() / 20).clamp(1, 1000).min(all.len().saturating_sub(1)).max(1);
    let valid: Vec<(String, String)> = order[..n_valid].iter().map(|&i| all[i].clone()).collect();
    let train: Vec<(String, String)> = order[n_valid..].iter().map(|&i| all[i].clone()).collect();
    if train.is_empty() {
        return Err(Error::file(&cfg.pairs, "too few pairs to hold some out"));
    }
    let train_ids = vocab.encode_pairs(&train)?;
    let max_len = all.iter().map(|p| p.1.chars().count()).max().unwrap_or(1) + 2;
    let (mut model, mut step, mut best) = match resumed {
        Some((model, meta)) => {
            if vocab_from_metadata(&checkpoint_path, &meta, model.spec())? != vocab {
                return Err(Error::file(
                    &checkpoint_path,
                    "the checkpoint was trained on other pairs' vocabularies",
                ));
            }
            let words: Vec<u64> = crate::io::field(&checkpoint_path, &meta, "train.rng")?
                .split(',')
                .map(|w| {
                    w.parse()
                        .map_err(|_| Error::file(&checkpoint_path, "metadata `train.rng` is not 4 numbers"))
                })
                .collect::<Result<_>>()?;
            let [a, b, c, d] = words[..] else {
                return Err(Error::file(&checkpoint_path, "metadata `train.rng` is not 4 numbers"));
            };
            rng = Rng::from_state([a, b, c, d]);
            let best: f64 = crate::io::parse(&checkpoint_path, &meta, "train.best")?;
            if !(best == -1.0 || (0.0..=1.0).contains(&best)) {
                return Err(Error::file(
                    &checkpoint_path,
                    format!("metadata `train.best` = {best} is not an accuracy"),
                ));
            }
            let step = usize::try_from(num(&meta, "train.step")?).unwrap_or(usize::MAX);
            (model, step, (best >= 0.0).then_some(best))
        }
        None => {
            let spec = Seq2SeqSpec {
                cell: cfg.cell,
                src_vocab: vocab.src_size(),
                tgt_vocab: vocab.tgt_size(),
                embed: cfg.embed,
                enc_hidden: cfg.hidden,
                enc_layers: cfg.layers,
                bidirectional: cfg.bidirectional,
                dec_hidden: cfg.hidden,
                dec_layers: cfg.layers,
                attention: cfg.attention,
                dropout: 0.0,
                bos: vocab.bos(),
                eos: vocab.eos(),
            };
            let mut model = Seq2Seq::new(spec, device, cfg.seed)?;
            model.set_optimizer(Optimizer::adam(cfg.lr), Clip { max_norm: cfg.clip, value: 0.0 })?;
            (model, 0, None)
        }
    };
    let progress = |step: usize, best: Option<f64>, rng: &Rng| -> Metadata {
        let mut m = vocab_metadata(&vocab);
        m.insert("train.step".into(), step.to_string());
        m.insert("train.seed".into(), seed.to_string());
        m.insert("train.best".into(), best.unwrap_or(-1.0).to_string());
        m.insert("train.rng".into(), rng.state().map(|w| w.to_string()).join(","));
        m
    };
    if ranks > 1 {
        // The ranks must run the same job, or their updates would differ.
        let params = model.flat_params()?;
        let pairs_ids = train_ids.iter().flat_map(|(a, b)| a.iter().chain(b).copied().chain([u32::MAX]));
        distributed::agree(
            comm,
            &[
                ("pairs", format!("{} pairs, digest {}", train_ids.len(), distributed::digest(pairs_ids))),
                ("device", distributed::device_kind(device)),
                ("model", format!("{:?}", model.spec())),
                ("weights", distributed::digest(params.iter().map(|x| x.to_bits()))),
                ("lr", cfg.lr.to_string()),
                ("clip", cfg.clip.to_string()),
                ("batch", cfg.batch.to_string()),
                ("steps", cfg.steps.to_string()),
                ("eval_every", cfg.eval_every.to_string()),
                ("seed", seed.to_string()),
                ("step", step.to_string()),
            ],
        )?;
    }
    let start = Instant::now();
    let mut interrupted = false;
    while step < cfg.steps {
        // Every rank stops at the same step when any of them is asked to.
        if distributed::any(comm, stop.load(Ordering::Relaxed))? {
            interrupted = true;
            break;
        }
        let batch: Vec<(Vec<u32>, Vec<u32>)> =
            (0..cfg.batch).map(|_| train_ids[rng.below(train_ids.len())].clone()).collect();
        match ranks {
            1 => model.train_step(&batch)?,
            _ => model.train_step_distributed(&batch[distributed::share(batch.len(), rank, ranks)?], comm)?,
        }
        step += 1;
        let eval = step % cfg.eval_every == 0 || step == cfg.steps;
        if step % 50 == 0 || eval {
            let loss = model.stats()?.loss;
            let mut p = PairProgress { step, loss, accuracy: None, elapsed: start.elapsed().as_secs_f64() };
            if eval && ranks > 1 {
                distributed::agree_on_weights(comm, step, &model.flat_params()?)?;
            }
            if eval && rank == 0 {
                let acc = accuracy(&mut model, &vocab, &valid, max_len)?;
                if best.is_none_or(|b| acc > b) {
                    best = Some(acc);
                    model.save(&best_path, &vocab_metadata(&vocab))?;
                }
                model.save_checkpoint(&checkpoint_path, &progress(step, best, &rng))?;
                p.accuracy = Some(acc);
            }
            if rank == 0 {
                on_progress(&p);
            }
        }
    }
    if rank == 0 && (interrupted || step % cfg.eval_every != 0) {
        model.save_checkpoint(&checkpoint_path, &progress(step, best, &rng))?;
    }
    Ok(PairSummary { step, best, best_model: best_path, interrupted })
}
