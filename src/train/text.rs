//! Training a character language model on a text file: the engine of `rnn-gpu train`.
//!
//! The text is split 90/10 into training and validation parts. The training part is read as
//! `batch` parallel streams cut into chunks of `seq_len` characters; the state is carried from
//! chunk to chunk (truncated BPTT, as char-rnn does) and reset at the start of each pass. Every
//! `eval_every` steps the validation loss is measured, a checkpoint written (the latest, and the
//! best model so far), and the loss curve redrawn (CSV and PNG). A raised stop flag (Ctrl-C)
//! makes the loop save a checkpoint and return.
//!
//! Data-parallel (`comm` of several ranks): every rank trains on its share of the streams, the
//! gradients averaged over the ranks at each step (`Model::train_step_distributed`); rank 0 alone
//! evaluates, samples and writes the files. The ranks check first that they run the same job.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::data::TextCorpus;
use crate::distributed::{self, Collective};
use crate::error::{Error, Result, check_nonzero};
use crate::io::{self, Metadata};
use crate::model::batch::Batch;
use crate::model::generate::Sampling;
use crate::model::spec::{Cell, ModelSpec, OutputMode};
use crate::model::{Device, Model, Start};
use crate::update::{Clip, Optimizer};

use super::Schedule;

/// The character model `train_text` trains; its vocabulary is the text's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CharModel {
    pub cell: Cell,
    pub hidden: usize,
    /// The LSTM's projection size (0: none).
    pub proj: usize,
    pub layers: usize,
    /// Between the layers.
    pub dropout: f32,
    /// On the top layer's outputs, before the head.
    pub output_dropout: f32,
    /// DropConnect on each W_hh (`ModelSpec::weight_drop`).
    pub weight_drop: f32,
}

impl CharModel {
    pub fn spec(&self, vocab: usize) -> ModelSpec {
        ModelSpec {
            proj: self.proj,
            dropout: self.dropout,
            output_dropout: self.output_dropout,
            weight_drop: self.weight_drop,
            ..ModelSpec::char_model(self.cell, vocab, self.hidden, self.layers)
        }
    }

    pub fn of(spec: &ModelSpec) -> CharModel {
        CharModel {
            cell: spec.cell,
            hidden: spec.hidden,
            proj: spec.proj,
            layers: spec.layers,
            dropout: spec.dropout,
            output_dropout: spec.output_dropout,
            weight_drop: spec.weight_drop,
        }
    }
}

#[derive(Clone, Debug)]
pub struct TextTrainConfig {
    pub text: PathBuf,
    /// Folder for checkpoint.safetensors, best.safetensors, loss.csv and loss.png.
    pub out: PathBuf,
    pub model: CharModel,
    pub seq_len: usize,
    pub batch: usize,
    /// The rule, at the schedule's base learning rate.
    pub optimizer: Optimizer,
    pub clip: Clip,
    pub schedule: Schedule,
    pub steps: usize,
    pub eval_every: usize,
    /// Validation chunks per evaluation (0: the whole validation text).
    pub eval_batches: usize,
    pub seed: u64,
    pub valid_fraction: f64,
    /// Continue from out/checkpoint.safetensors.
    pub resume: bool,
}

/// What the loop reports as it goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    pub train_loss: f32,
    /// Set on evaluation steps.
    pub val_loss: Option<f32>,
    pub best_val: f32,
    pub tokens_per_sec: f64,
    pub elapsed: f64,
    /// A short sample, on evaluation steps.
    pub sample: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub step: usize,
    pub best_val: f32,
    pub elapsed: f64,
    pub interrupted: bool,
    pub best_model: PathBuf,
}

/// One row of the loss curve.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Row {
    step: usize,
    train: f32,
    val: f32,
    tokens_per_sec: f64,
    elapsed: f64,
}

const CHECKPOINT: &str = "checkpoint.safetensors";
const BEST: &str = "best.safetensors";

pub fn checkpoint_path(out: &Path) -> PathBuf {
    out.join(CHECKPOINT)
}

pub fn best_path(out: &Path) -> PathBuf {
    out.join(BEST)
}

fn write_curve(out: &Path, rows: &[Row]) -> Result<()> {
    let mut csv = String::from("step,train_loss,val_loss,tokens_per_sec,elapsed_s\n");
    for r in rows {
        csv.push_str(&format!(
            "{},{:.5},{:.5},{:.1},{:.1}\n",
            r.step, r.train, r.val, r.tokens_per_sec, r.elapsed
        ));
    }
    io::write_atomic(&out.join("loss.csv"), csv.as_bytes())?;
    #[cfg(feature = "plot")]
    {
        let train: Vec<(f64, f64)> = rows.iter().map(|r| (r.step as f64, r.train as f64)).collect();
        let valid: Vec<(f64, f64)> = rows.iter().map(|r| (r.step as f64, r.val as f64)).collect();
        super::plot::loss_curve(&out.join("loss.png"), &train, &valid)?;
    }
    Ok(())
}

fn read_curve(out: &Path) -> Vec<Row> {
    let Ok(text) = std::fs::read_to_string(out.join("loss.csv")) else { return Vec::new() };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Some(Row {
                step: f.first()?.parse().ok()?,
                train: f.get(1)?.parse().ok()?,
                val: f.get(2)?.parse().ok()?,
                tokens_per_sec: f.get(3)?.parse().ok()?,
                elapsed: f.get(4)?.parse().ok()?,
            })
        })
        .collect()
}

/// What a checkpoint decides when a run resumes from it.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub spec: ModelSpec,
    /// The rule at the schedule's base learning rate.
    pub optimizer: Optimizer,
    pub clip: Clip,
    pub schedule: Schedule,
}

/// The settings of the checkpoint in `out`, read from its header alone. A checkpoint written
/// before schedules were saved has a constant one at the rate it holds.
pub fn checkpoint_settings(out: &Path) -> Result<Settings> {
    let path = checkpoint_path(out);
    let meta = io::read_metadata(&path)?;
    let spec = io::spec_from_metadata(&path, &meta)?;
    let (mut optimizer, clip) = io::optimizer_from_metadata(&path, &meta)?;
    let mut schedule = Schedule::CONSTANT;
    if meta.contains_key("train.base_lr") {
        optimizer.set_lr(io::parse(&path, &meta, "train.base_lr")?);
        optimizer.validate().map_err(|e| Error::file(&path, e.to_string()))?;
        schedule.warmup = io::parse(&path, &meta, "train.warmup")?;
        schedule.decay = io::field(&path, &meta, "train.decay")?
            .parse()
            .map_err(|e: Error| Error::file(&path, e.to_string()))?;
    }
    Ok(Settings { spec, optimizer, clip, schedule })
}

/// The mean loss over validation chunks, the state carried along the streams.
pub fn validation_loss(model: &mut Model, chunks: &[Batch]) -> Result<f32> {
    let mut total = 0.0;
    for (i, b) in chunks.iter().enumerate() {
        total += model.evaluate(b, if i == 0 { Start::Fresh } else { Start::Continue })?;
    }
    Ok(total / chunks.len().max(1) as f32)
}

fn check(cfg: &TextTrainConfig) -> Result<()> {
    const OP: &str = "train";
    // hidden and layers: checked with the model's sizes below.
    for (what, v) in
        [("seq_len", cfg.seq_len), ("batch", cfg.batch), ("eval_every", cfg.eval_every), ("steps", cfg.steps)]
    {
        check_nonzero(OP, what, v)?;
    }
    // The model's sizes first, before the text is read: one character stands for the vocabulary.
    cfg.model.spec(1).validate()?;
    if !(cfg.valid_fraction > 0.0 && cfg.valid_fraction < 1.0) {
        return Err(Error::range(OP, "valid_fraction", cfg.valid_fraction, "in (0, 1)"));
    }
    cfg.schedule.validate()?;
    Ok(())
}

/// Refuses a data-parallel job whose ranks differ in anything that would make their updates
/// differ: the text, the model and its starting weights, the training settings.
fn agree_on_job(
    comm: &dyn Collective,
    cfg: &TextTrainConfig,
    device: &Device,
    corpus: &TextCorpus,
    model: &mut Model,
    step: usize,
) -> Result<()> {
    let params = model.flat_params()?;
    distributed::agree(
        comm,
        &[
            (
                "text",
                format!(
                    "{} characters, digest {}",
                    corpus.ids.len(),
                    distributed::digest(corpus.ids.iter().copied())
                ),
            ),
            ("device", distributed::device_kind(device)),
            ("cell", cfg.model.cell.name().to_string()),
            ("hidden", cfg.model.hidden.to_string()),
            ("layers", cfg.model.layers.to_string()),
            ("dropout", cfg.model.dropout.to_string()),
            ("output_dropout", cfg.model.output_dropout.to_string()),
            ("weight_drop", cfg.model.weight_drop.to_string()),
            ("model", format!("{:?}", model.spec())),
            ("weights", distributed::digest(params.iter().map(|x| x.to_bits()))),
            ("optimizer", format!("{:?} {:?}", cfg.optimizer, cfg.clip)),
            ("schedule", format!("{:?}", cfg.schedule)),
            ("batch", cfg.batch.to_string()),
            ("seq_len", cfg.seq_len.to_string()),
            ("steps", cfg.steps.to_string()),
            ("eval_every", cfg.eval_every.to_string()),
            ("step", step.to_string()),
        ],
    )
}

/// Trains (or resumes) a character model as `cfg` says, reporting through `on_progress`; as one of
/// the ranks of `comm` (`distributed::Single` alone).
pub fn train_text(
    cfg: &TextTrainConfig,
    device: &Device,
    comm: &dyn Collective,
    stop: &AtomicBool,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Summary> {
    check(cfg)?;
    let (rank, ranks) = (comm.rank(), comm.size());
    let corpus = TextCorpus::load(&cfg.text)?;
    let (train, valid) = corpus.split(cfg.valid_fraction);
    let chunks: Vec<Batch> = train
        .stream_batches(cfg.seq_len, cfg.batch)
        .iter()
        .map(|b| b.shard(OutputMode::ManyToMany, rank, ranks))
        .collect::<Result<_>>()?;
    if chunks.is_empty() {
        return Err(Error::invalid(
            "train",
            format!(
                "{}: the training text is too short for {} streams of {} characters",
                cfg.text.display(),
                cfg.batch,
                cfg.seq_len
            ),
        ));
    }
    let mut val_chunks = valid.stream_batches(cfg.seq_len, cfg.batch);
    if val_chunks.is_empty() {
        return Err(Error::invalid(
            "train",
            "the validation text is too short for one batch; lower --batch or --seq-len",
        ));
    }
    if cfg.eval_batches > 0 {
        val_chunks.truncate(cfg.eval_batches);
    }
    if rank == 0 {
        std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    }
    let vocab: String = corpus.vocab.iter().collect();

    let (mut model, mut step, mut best_val, mut rows, elapsed0, mut carried) = if cfg.resume {
        let path = checkpoint_path(&cfg.out);
        let ck = io::load_checkpoint(&path, device)?;
        let meta = &ck.metadata;
        if meta.get("vocab") != Some(&vocab) {
            return Err(Error::file(
                &path,
                "the checkpoint was trained on another vocabulary than this text's",
            ));
        }
        let step: u64 = io::parse(&path, meta, "train.step")?;
        let best: f32 = io::parse(&path, meta, "train.best_val")?;
        // Infinite until the first evaluation; a validation loss is never negative or NaN.
        if !(best >= 0.0) {
            return Err(Error::file(
                &path,
                format!("metadata `train.best_val` = {best} is not a validation loss"),
            ));
        }
        let elapsed: f64 = io::parse(&path, meta, "train.elapsed")?;
        if !(elapsed >= 0.0 && elapsed.is_finite()) {
            return Err(Error::file(
                &path,
                format!("metadata `train.elapsed` = {elapsed} is not a duration"),
            ));
        }
        // The carried state continues the streams only for the same number of them (a
        // data-parallel run saves none: its streams restart).
        let carried = ck.carried.filter(|c| {
            ranks == 1 && c.h.len() == ck.model.spec().state_rows() * cfg.batch * ck.model.spec().state_size()
        });
        (ck.model, usize::try_from(step).unwrap_or(usize::MAX), best, read_curve(&cfg.out), elapsed, carried)
    } else {
        let mut model = Model::new(cfg.model.spec(corpus.vocab.len()), device, cfg.seed)?;
        model.set_optimizer(cfg.optimizer, cfg.clip)?;
        (model, 0, f32::INFINITY, Vec::new(), 0.0, None)
    };

    if ranks > 1 {
        agree_on_job(comm, cfg, device, &corpus, &mut model, step)?;
    }
    let base_lr = cfg.optimizer.lr();
    let progress_meta = |step: usize, best: f32, elapsed: f64| -> Metadata {
        let mut m = Metadata::new();
        m.insert("vocab".into(), vocab.clone());
        m.insert("train.step".into(), step.to_string());
        m.insert("train.best_val".into(), best.to_string());
        m.insert("train.elapsed".into(), format!("{elapsed:.3}"));
        m.insert("train.text".into(), cfg.text.display().to_string());
        m.insert("train.base_lr".into(), base_lr.to_string());
        m.insert("train.warmup".into(), cfg.schedule.warmup.to_string());
        m.insert("train.decay".into(), cfg.schedule.decay.to_string());
        m
    };
    let start = Instant::now();
    let tokens_per_step = (cfg.seq_len * cfg.batch) as f64;
    let mut window = (Instant::now(), 0usize);
    let mut fresh = carried.is_none();
    let mut interrupted = false;
    while step < cfg.steps {
        // Every rank stops at the same step when any of them is asked to.
        if distributed::any(comm, stop.load(Ordering::Relaxed))? {
            interrupted = true;
            break;
        }
        let pos = step % chunks.len();
        let resumed = carried.take();
        let begin = match &resumed {
            _ if pos == 0 || fresh => Start::Fresh,
            Some(state) => state.start(),
            None => Start::Continue,
        };
        fresh = false;
        let lr = base_lr * cfg.schedule.factor(step);
        if lr != model.optimizer().lr() {
            model.set_lr(lr)?;
        }
        match ranks {
            1 => model.train_step(&chunks[pos], begin)?,
            _ => model.train_step_distributed(&chunks[pos], begin, comm)?,
        }
        step += 1;
        window.1 += 1;
        let eval = step % cfg.eval_every == 0 || step == cfg.steps;
        if step % 10 == 0 || eval {
            let train_loss = model.stats()?.loss;
            let tokens_per_sec = tokens_per_step * window.1 as f64 / window.0.elapsed().as_secs_f64();
            let elapsed = elapsed0 + start.elapsed().as_secs_f64();
            let mut p = Progress {
                step,
                steps: cfg.steps,
                train_loss,
                val_loss: None,
                best_val,
                tokens_per_sec,
                elapsed,
                sample: None,
            };
            // Validation used the training batch size's state: the streams restart after it,
            // on every rank.
            fresh |= eval;
            if eval && ranks > 1 {
                distributed::agree_on_weights(comm, step, &model.flat_params()?)?;
            }
            if eval && rank == 0 {
                let val = validation_loss(&mut model, &val_chunks)?;
                if val < best_val {
                    best_val = val;
                    io::save_model(
                        &best_path(&cfg.out),
                        &mut model,
                        &progress_meta(step, best_val, elapsed),
                    )?;
                }
                rows.push(Row { step, train: train_loss, val, tokens_per_sec, elapsed });
                write_curve(&cfg.out, &rows)?;
                // Right after an evaluation the streams restart: no state to carry.
                io::save_checkpoint(
                    &checkpoint_path(&cfg.out),
                    &mut model,
                    None,
                    &progress_meta(step, best_val, elapsed),
                )?;
                let prime = corpus.ids[..1].to_vec();
                let ids = model.generate(
                    &prime,
                    120,
                    Sampling { temperature: 0.8, top_k: 0, seed: step as u64 },
                )?;
                p.val_loss = Some(val);
                p.best_val = best_val;
                p.sample = Some(TextCorpus::decode(&corpus.vocab, &ids));
            }
            if rank == 0 {
                on_progress(&p);
            }
            window = (Instant::now(), 0);
        }
    }
    let elapsed = elapsed0 + start.elapsed().as_secs_f64();
    if rank == 0 && (interrupted || step % cfg.eval_every != 0) {
        // Between evaluations the next chunk continues the streams: save their state.
        let carried = if fresh || ranks > 1 { None } else { model.carried_state(cfg.batch)? };
        io::save_checkpoint(
            &checkpoint_path(&cfg.out),
            &mut model,
            carried.as_ref(),
            &progress_meta(step, best_val, elapsed),
        )?;
    }
    Ok(Summary { step, best_val, elapsed, interrupted, best_model: best_path(&cfg.out) })
}
