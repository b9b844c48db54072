//! `train` and `sample`: character models on text.

use super::*;

#[derive(Args)]
pub(crate) struct TrainArgs {
    /// The text to learn.
    #[arg(long, default_value = "data/tinyshakespeare.txt")]
    text: PathBuf,
    /// Folder for checkpoint.safetensors, best.safetensors, loss.csv, loss.png.
    #[arg(long, default_value = "runs/char")]
    out: PathBuf,
    /// The recurrent cell (an unknown name is answered with the list).
    #[arg(long, default_value = "lstm")]
    cell: String,
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    /// The LSTM's projection size, PyTorch's proj_size (0: none): each layer outputs and feeds
    /// back W_hr·h, this many values.
    #[arg(long, default_value_t = 0)]
    proj: usize,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Dropout between layers in training.
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// Dropout on the top layer's outputs, before the head, in training.
    #[arg(long, default_value_t = 0.0)]
    output_dropout: f32,
    /// DropConnect on the recurrent weights W_hh in training (AWD-LSTM's weight drop): the
    /// fraction of their elements zeroed, the same ones at every time step of a batch.
    #[arg(long, default_value_t = 0.0)]
    weight_drop: f32,
    /// Characters per chunk of truncated BPTT.
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// The update rule (src/update).
    #[arg(long, default_value = "adam", value_parser = clap::builder::PossibleValuesParser::new(rnn_gpu::update::cli_names()))]
    optimizer: String,
    /// The base learning rate (of the schedule).
    #[arg(long, default_value_t = 3e-3)]
    lr: f32,
    /// SGD's momentum (the `momentum` and `nesterov` optimizers: 0.9).
    #[arg(long)]
    momentum: Option<f32>,
    /// SGD with Nesterov momentum.
    #[arg(long)]
    nesterov: bool,
    /// L2 weight decay (AdamW: decoupled, as torch.optim.AdamW).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Updates over which the learning rate rises linearly to --lr.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Then: constant, step:EVERY:GAMMA (times GAMMA every EVERY updates), or cosine:STEPS:FLOOR
    /// (half a cosine down to FLOOR times --lr over STEPS updates).
    #[arg(long, default_value = "constant")]
    decay: String,
    /// Clip the global gradient norm to this (0: off).
    #[arg(long, default_value_t = 5.0)]
    clip: f32,
    /// Clamp each gradient element to +-this (0: off).
    #[arg(long, default_value_t = 0.0)]
    clip_value: f32,
    #[arg(long, default_value_t = 600)]
    steps: usize,
    /// Measure the validation loss and checkpoint every this many steps.
    #[arg(long, default_value_t = 100)]
    eval_every: usize,
    /// Validation chunks per evaluation (0: all).
    #[arg(long, default_value_t = 16)]
    eval_batches: usize,
    /// cpu (native), gpu, reference, or auto (a hardware GPU when there is one, else cpu).
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Continue from OUT/checkpoint.safetensors.
    #[arg(long)]
    resume: bool,
    /// Train data-parallel as one rank of `mpirun -np N rnn-gpu train --distributed ...` (built
    /// with the `mpi` feature): each rank takes --batch/N of the streams; rank 0 writes the files.
    #[arg(long)]
    distributed: bool,
}

#[derive(Args)]
pub(crate) struct SampleArgs {
    /// A model file or checkpoint written by `rnn-gpu train`.
    #[arg(long, default_value = "runs/char/best.safetensors")]
    model: PathBuf,
    /// Text to start from.
    #[arg(long, default_value = "\n")]
    prime: String,
    /// Characters to generate.
    #[arg(long, default_value_t = 500)]
    len: usize,
    /// 0 picks the most likely character each time.
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Draw among the k most likely characters only (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// cpu (native), gpu, reference, or auto (a hardware GPU when there is one, else cpu).
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Args)]
pub(crate) struct EvalArgs {
    /// A model file or checkpoint written by `rnn-gpu train`.
    #[arg(long, default_value = "runs/char/best.safetensors")]
    model: PathBuf,
    /// The text to measure the model on (its characters must be in the model's vocabulary).
    #[arg(long)]
    text: PathBuf,
    /// Characters per chunk; the state is carried from chunk to chunk along each stream.
    #[arg(long, default_value_t = 100)]
    seq_len: usize,
    /// Parallel streams over the text.
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// cpu (native), gpu, reference, or auto (a hardware GPU when there is one, else cpu).
    #[arg(long, default_value = "auto")]
    device: String,
}

/// A character model and its vocabulary, from a file `train` wrote.
fn char_model(path: &std::path::Path, device: &Device) -> rnn_gpu::Result<(rnn_gpu::Model, TextCorpus)> {
    let (model, meta) = rnn_gpu::io::load_model(path, device, None)?;
    let vocab = rnn_gpu::io::char_vocab(path, &model, &meta)?;
    Ok((model, TextCorpus { vocab, ids: Vec::new() }))
}

pub(crate) fn eval(a: EvalArgs) -> rnn_gpu::Result<ExitCode> {
    for (what, v) in [("--seq-len", a.seq_len), ("--batch", a.batch)] {
        if v == 0 {
            return Err(rnn_gpu::Error::Invalid {
                op: "eval",
                message: format!("{what} must be at least 1"),
            });
        }
    }
    let device = Device::from_name(&a.device)?;
    let (mut model, corpus) = char_model(&a.model, &device)?;
    let text = std::fs::read_to_string(&a.text)
        .map_err(|e| rnn_gpu::Error::Io { path: a.text.clone(), source: e })?;
    let corpus = TextCorpus { ids: corpus.encode(&text)?, ..corpus };
    let chunks = corpus.stream_batches(a.seq_len, a.batch);
    if chunks.is_empty() {
        return Err(rnn_gpu::Error::Invalid {
            op: "eval",
            message: format!(
                "{} holds {} characters, fewer than one chunk of --batch {} x --seq-len {}",
                a.text.display(),
                corpus.ids.len(),
                a.batch,
                a.seq_len
            ),
        });
    }
    let loss = rnn_gpu::train::text::validation_loss(&mut model, &chunks)?;
    let predicted = chunks.len() * a.seq_len * a.batch;
    outln!(
        "{}: {:.4} nats/char ({:.4} bits/char, perplexity {:.3}) over {predicted} of {} characters, {} streams of {}-character chunks",
        a.text.display(),
        loss,
        loss / std::f32::consts::LN_2,
        loss.exp(),
        corpus.ids.len(),
        a.batch,
        a.seq_len
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn parse_cell(name: &str) -> rnn_gpu::Result<Cell> {
    Cell::from_name(name).ok_or_else(|| rnn_gpu::Error::Invalid {
        op: "--cell",
        message: format!("unknown cell {name:?}; use one of {}", Cell::ALL.map(Cell::name).join(", ")),
    })
}

/// With `--resume`, the checkpoint decides the model and the optimizer: a flag given explicitly
/// that says otherwise is refused, named with both values, rather than silently ignored.
pub(crate) fn resume_conflicts(a: &TrainArgs, given: &dyn Fn(&str) -> bool) -> rnn_gpu::Result<Settings> {
    let settings = rnn_gpu::train::text::checkpoint_settings(&a.out)?;
    let (spec, opt, clip, schedule) = (&settings.spec, settings.optimizer, settings.clip, settings.schedule);
    let mine = optimizer(a)?;
    let mut conflicts = Vec::new();
    let mut differs = |flag: &str, mine: String, theirs: String| {
        if given(flag) && mine != theirs {
            conflicts.push(format!("--{} {mine} (the checkpoint's: {theirs})", flag.replace('_', "-")));
        }
    };
    differs("cell", parse_cell(&a.cell)?.name().into(), spec.cell.name().into());
    differs("hidden", a.hidden.to_string(), spec.hidden.to_string());
    differs("proj", a.proj.to_string(), spec.proj.to_string());
    differs("layers", a.layers.to_string(), spec.layers.to_string());
    differs("dropout", a.dropout.to_string(), spec.dropout.to_string());
    differs("output_dropout", a.output_dropout.to_string(), spec.output_dropout.to_string());
    differs("weight_drop", a.weight_drop.to_string(), spec.weight_drop.to_string());
    differs("optimizer", mine.name().into(), opt.name().into());
    for (flag, field) in
        [("momentum", "momentum"), ("nesterov", "nesterov"), ("weight_decay", "weight_decay")]
    {
        let value = |o: &Optimizer| o.fields().into_iter().find(|f| f.0 == field).map(|f| f.1);
        differs(flag, value(&mine).unwrap_or_default(), value(&opt).unwrap_or_default());
    }
    differs("lr", a.lr.to_string(), opt.lr().to_string());
    differs("warmup", a.warmup.to_string(), schedule.warmup.to_string());
    differs("decay", a.decay.clone(), schedule.decay.to_string());
    differs("clip", a.clip.to_string(), clip.max_norm.to_string());
    differs("clip_value", a.clip_value.to_string(), clip.value.to_string());
    if given("seed") {
        conflicts.push("--seed (the checkpoint carries its own random state)".into());
    }
    if !conflicts.is_empty() {
        return Err(rnn_gpu::Error::Invalid {
            op: "--resume",
            message: format!(
                "the checkpoint in {} is not what these flags ask for: {}. Drop them to continue the \
                 checkpoint as it was, or train a new model into another --out",
                a.out.display(),
                conflicts.join(", ")
            ),
        });
    }
    Ok(settings)
}

/// The update rule the flags ask for: `--optimizer` at `--lr`, with the hyperparameters given.
fn optimizer(a: &TrainArgs) -> rnn_gpu::Result<Optimizer> {
    let mut opt = Optimizer::from_name(&a.optimizer, a.lr).ok_or_else(|| rnn_gpu::Error::Invalid {
        op: "--optimizer",
        message: format!(
            "unknown optimizer {:?}; use one of {}",
            a.optimizer,
            rnn_gpu::update::cli_names().join(", ")
        ),
    })?;
    if let Some(m) = a.momentum {
        opt = opt.with_field("momentum", &m.to_string())?;
    }
    if a.nesterov {
        opt = opt.with_field("nesterov", "true")?;
    }
    if let Some(w) = a.weight_decay {
        opt = opt.with_field("weight_decay", &w.to_string())?;
    }
    Ok(opt)
}

pub(crate) fn train(a: TrainArgs, given: &dyn Fn(&str) -> bool) -> rnn_gpu::Result<ExitCode> {
    let job = Job::join(a.distributed)?;
    let result = train_as(a, given, &job);
    job.finish(result)
}

fn train_as(a: TrainArgs, given: &dyn Fn(&str) -> bool, job: &Job) -> rnn_gpu::Result<ExitCode> {
    let (model, optimizer, clip, schedule) = if a.resume {
        let s = resume_conflicts(&a, given)?;
        (CharModel::of(&s.spec), s.optimizer, s.clip, s.schedule)
    } else {
        let optimizer = optimizer(&a)?;
        let clip = Clip { max_norm: a.clip, value: a.clip_value };
        let schedule = Schedule { warmup: a.warmup, decay: a.decay.parse()? };
        let model = CharModel {
            cell: parse_cell(&a.cell)?,
            hidden: a.hidden,
            proj: a.proj,
            layers: a.layers,
            dropout: a.dropout,
            output_dropout: a.output_dropout,
            weight_drop: a.weight_drop,
        };
        (model, optimizer, clip, schedule)
    };
    let device = Device::from_name_at(&a.device, job.local_rank())?;
    let (comm, lead) = (job.comm(), job.rank() == 0);
    let cfg = TextTrainConfig {
        text: a.text,
        out: a.out,
        model,
        seq_len: a.seq_len,
        batch: a.batch,
        optimizer,
        clip,
        schedule,
        steps: a.steps,
        eval_every: a.eval_every,
        eval_batches: a.eval_batches,
        seed: a.seed,
        valid_fraction: 0.1,
        resume: a.resume,
    };
    // Ctrl-C (or a SIGTERM, which is what mpirun passes on to its ranks): finish the current
    // step, save a checkpoint, exit; every rank of a job stops at the same step.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    if !lead {
        // The other ranks train quietly; rank 0 reports for the job.
        train_text(&cfg, &device, comm, &stop, &mut |_| {})?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("device: {}", device.describe());
    if comm.size() > 1 {
        outln!("data-parallel over {} ranks, {} streams each", comm.size(), cfg.batch.div_ceil(comm.size()));
    }
    outln!(
        "training a {}-layer {} of {} units{} on {} ({} steps of {}x{} characters, {} lr {}), writing to {}",
        cfg.model.layers,
        cfg.model.cell.name(),
        cfg.model.hidden,
        if cfg.model.proj > 0 { format!(" projected to {}", cfg.model.proj) } else { String::new() },
        cfg.text.display(),
        cfg.steps,
        cfg.batch,
        cfg.seq_len,
        cfg.optimizer.name(),
        cfg.optimizer.lr(),
        cfg.out.display()
    );
    let pipe_closed = stop.clone();
    let bar = indicatif::ProgressBar::new(cfg.steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}").expect("progress template"),
    );
    let mut report = |p: &Progress| {
        bar.set_position(p.step as u64);
        bar.set_message(format!(
            "loss {:.3}  valid {}  {:.0} tok/s  {:.0}s",
            p.train_loss,
            if p.best_val.is_finite() { format!("{:.3}", p.best_val) } else { "-".into() },
            p.tokens_per_sec,
            p.elapsed
        ));
        if let (Some(v), Some(sample)) = (p.val_loss, &p.sample) {
            let line = format!(
                "step {:>6}  train {:.4}  valid {:.4}  {:.0} tok/s  {:.0}s\n  | {}",
                p.step,
                p.train_loss,
                v,
                p.tokens_per_sec,
                p.elapsed,
                sample.replace('\n', "\n  | ")
            );
            // A hidden bar (output not a terminal) swallows println: print plainly then. A closed
            // stdout stops the run as Ctrl-C does, with its checkpoint saved.
            if bar.is_hidden() {
                if !try_say(format_args!("{line}")) {
                    pipe_closed.store(true, Ordering::Relaxed);
                }
            } else {
                bar.println(line)
            }
        }
    };
    let summary = train_text(&cfg, &device, comm, &stop, &mut report)?;
    bar.finish_and_clear();
    if summary.interrupted {
        outln!("interrupted at step {}; checkpoint saved, continue with --resume", summary.step);
    }
    outln!(
        "done: {} steps in {:.0}s, best validation loss {:.4} nats/char, model in {}",
        summary.step,
        summary.elapsed,
        summary.best_val,
        summary.best_model.display()
    );
    outln!("loss curve: {}/loss.png and loss.csv", cfg.out.display());
    outln!("sample (temperature 0.8):");
    // Start a new line when the text has line breaks, else from its first character.
    let text = std::fs::read_to_string(&cfg.text)
        .map_err(|e| rnn_gpu::Error::Io { path: cfg.text.clone(), source: e })?;
    let prime = if text.contains('\n') { "\n".to_string() } else { text.chars().take(1).collect() };
    sample(SampleArgs {
        model: summary.best_model,
        prime,
        len: 400,
        temperature: 0.8,
        top_k: 0,
        seed: 1,
        device: a.device,
    })
}

pub(crate) fn sample(a: SampleArgs) -> rnn_gpu::Result<ExitCode> {
    let device = Device::from_name(&a.device)?;
    let (mut model, corpus) = char_model(&a.model, &device)?;
    let prime = if a.prime.is_empty() { "\n".to_string() } else { a.prime.clone() };
    let ids = corpus.encode(&prime)?;
    let out =
        model.generate(&ids, a.len, Sampling { temperature: a.temperature, top_k: a.top_k, seed: a.seed })?;
    outln!("{}{}", prime, TextCorpus::decode(&corpus.vocab, &out));
    Ok(ExitCode::SUCCESS)
}
