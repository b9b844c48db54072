//! Training an encoder-decoder on a file of tab-separated (source, target) text pairs: the engine
//! of `rnn-gpu seq2seq`. Character vocabularies come from the pairs; 5% of them are held out, and
//! every `eval_every` steps the held-out exact-match accuracy (greedy decoding) is measured and
//! the best model saved with its vocabularies.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Seq2Seq, Seq2SeqSpec};
use crate::data::{PairVocab, read_pairs};
use crate::error::{Error, Result};
use crate::io::Metadata;
use crate::model::Device;
use crate::model::spec::Cell;
use crate::rng::Rng;
use crate::train::optim::{Clip, Optimizer};

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

pub fn vocab_from_metadata(path: &Path, m: &Metadata) -> Result<PairVocab> {
    match (m.get(SRC_VOCAB), m.get(TGT_VOCAB)) {
        (Some(s), Some(t)) => Ok(PairVocab::from_strings(s, t)),
        _ => Err(Error::file(path, "no character vocabularies in the metadata")),
    }
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

/// Trains as `cfg` says; returns the best held-out accuracy and the path of the best model.
pub fn train_pairs(
    cfg: &PairTrainConfig,
    device: &Device,
    on_progress: &mut dyn FnMut(&PairProgress),
) -> Result<(f64, PathBuf)> {
    let all = read_pairs(&cfg.pairs)?;
    let vocab = PairVocab::from_pairs(&all);
    let mut rng = Rng::seed_from_u64(cfg.seed);
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
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let best_path = cfg.out.join("seq2seq.safetensors");
    let mut best = -1.0;
    let start = Instant::now();
    for step in 1..=cfg.steps {
        let batch: Vec<(Vec<u32>, Vec<u32>)> =
            (0..cfg.batch).map(|_| train_ids[rng.below(train_ids.len())].clone()).collect();
        model.train_step(&batch)?;
        let eval = step % cfg.eval_every.max(1) == 0 || step == cfg.steps;
        if step % 50 == 0 || eval {
            let loss = model.stats()?.loss;
            let mut p = PairProgress { step, loss, accuracy: None, elapsed: start.elapsed().as_secs_f64() };
            if eval {
                let acc = accuracy(&mut model, &vocab, &valid, max_len)?;
                if acc > best {
                    best = acc;
                    model.save(&best_path, &vocab_metadata(&vocab))?;
                }
                p.accuracy = Some(acc);
            }
            on_progress(&p);
        }
    }
    Ok((best, best_path))
}
