//! The `rnn-gpu` command: thin over the library. Parses, calls, reports.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use rnn_gpu::data::TextCorpus;
use rnn_gpu::gpu::{GpuContext, list_adapters};
use rnn_gpu::train::text::{Progress, TextTrainConfig, train_text};
use rnn_gpu::{Cell, Clip, Device, Optimizer, Sampling, verify};

#[derive(Parser)]
#[command(
    name = "rnn-gpu",
    version,
    about = "Recurrent networks (RNN, LSTM, GRU) on any GPU through wgpu, or natively on the CPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The devices: the CPU ones, the adapters, what auto chooses and why, the adapter's limits
    /// and the kernel variants chosen for it.
    Info(DeviceArgs),
    /// Every kernel of the device against its plain-loop twin (the reference: its f32 gradients
    /// against f64, and those against finite differences); exits non-zero on any failure.
    Verify(DeviceArgs),
    /// Train a character language model on a text file (by default the bundled tinyshakespeare).
    Train(TrainArgs),
    /// Generate text from a trained character model.
    Sample(SampleArgs),
    /// Run a model on tensors from a safetensors file, and backpropagate given output gradients.
    Forward(ForwardArgs),
    /// Time the standard cases on every device, each checked against the reference first.
    Bench(BenchArgs),
    /// Sequence to sequence: train an encoder-decoder on text pairs, or translate with one.
    #[command(subcommand)]
    Seq2seq(Seq2seqCommand),
}

#[derive(Args)]
struct DeviceArgs {
    /// cpu (native), gpu, reference, or auto (a hardware GPU when there is one, else cpu).
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Args)]
struct BenchArgs {
    /// all (every device there is: the GPU when wgpu finds an adapter, and the native CPU), or one
    /// of cpu, gpu, reference, auto.
    #[arg(long, default_value = "all")]
    device: String,
    /// Time the plain-loop reference too (slow: a few runs only).
    #[arg(long)]
    reference: bool,
    /// Small cases, for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Only the cases whose name contains this (e.g. lstm, H=512).
    #[arg(long)]
    only: Option<String>,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Per training step: dispatches, submits, host waits and bytes allocated after warm-up.
    #[arg(long)]
    verbose: bool,
    /// Per-kernel GPU time of a training step (timestamp queries).
    #[arg(long)]
    profile: bool,
}

#[derive(Subcommand)]
enum Seq2seqCommand {
    /// Train on a file of `source<TAB>target` lines (character level).
    Train(PairTrainArgs),
    /// Translate lines from standard input, one output line per input line.
    Translate(TranslateArgs),
}

#[derive(Args)]
struct PairTrainArgs {
    /// Tab-separated source/target pairs, one per line.
    #[arg(long)]
    pairs: PathBuf,
    /// Folder for seq2seq.safetensors (the model with the best held-out accuracy).
    #[arg(long, default_value = "runs/seq2seq")]
    out: PathBuf,
    /// Continue from OUT/checkpoint.safetensors (the model, optimizer and split are the
    /// checkpoint's).
    #[arg(long)]
    resume: bool,
    #[arg(long, default_value = "gru")]
    cell: String,
    #[arg(long, default_value_t = 32)]
    embed: usize,
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// A one-direction encoder (bidirectional by default).
    #[arg(long)]
    unidirectional: bool,
    /// No attention (Luong general attention by default).
    #[arg(long)]
    no_attention: bool,
    #[arg(long, default_value_t = 64)]
    batch: usize,
    #[arg(long, default_value_t = 1000)]
    steps: usize,
    #[arg(long, default_value_t = 3e-3)]
    lr: f32,
    #[arg(long, default_value_t = 1.0)]
    clip: f32,
    #[arg(long, default_value_t = 250)]
    eval_every: usize,
    /// cpu (native), gpu, reference, or auto (a hardware GPU when there is one, else cpu).
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
struct TranslateArgs {
    #[arg(long, default_value = "runs/seq2seq/seq2seq.safetensors")]
    model: PathBuf,
    /// Beam width (1: greedy).
    #[arg(long, default_value_t = 1)]
    beam: usize,
    /// The longest output, in characters.
    #[arg(long, default_value_t = 100)]
    max_len: usize,
    /// cpu (native), gpu, reference, or auto (a hardware GPU when there is one, else cpu).
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Args)]
struct ForwardArgs {
    /// A model file, or a bare PyTorch nn.RNN/LSTM/GRU state_dict (then give --cell).
    #[arg(long)]
    model: PathBuf,
    /// safetensors with `input` [T, B, I] floats or `tokens` [T, B] integers, and optionally
    /// `h0`, `c0` [L*D, B, H] and `lengths` [B].
    #[arg(long)]
    input: PathBuf,
    /// safetensors with `output` [T, B, D*H], the gradient of the outputs (and optionally `h_n`,
    /// `c_n`): then the gradients of every parameter, the input and the initial states are
    /// written too.
    #[arg(long)]
    grad_output: Option<PathBuf>,
    /// Where to write `output`, `h_n`, `c_n`, `logits` and the `grad.*` tensors.
    #[arg(long)]
    out: PathBuf,
    /// The cell of a bare PyTorch state_dict (one of the names `train --cell` takes).
    #[arg(long)]
    cell: Option<String>,
    /// cpu (native), gpu, reference, or auto (a hardware GPU when there is one, else cpu).
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Args)]
struct TrainArgs {
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
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Dropout between layers in training.
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// Characters per chunk of truncated BPTT.
    #[arg(long, default_value_t = 64)]
    seq_len: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// The update rule (src/update).
    #[arg(long, default_value = "adam", value_parser = clap::builder::PossibleValuesParser::new(rnn_gpu::update::cli_names()))]
    optimizer: String,
    #[arg(long, default_value_t = 3e-3)]
    lr: f32,
    /// Multiply the learning rate by this after every evaluation.
    #[arg(long, default_value_t = 1.0)]
    lr_decay: f32,
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
}

#[derive(Args)]
struct SampleArgs {
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

/// `println!` for the command's output: a closed stdout (`| head`) ends the program quietly, as
/// other Unix tools do, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        say(format_args!($($arg)*))
    };
}

fn say(line: std::fmt::Arguments<'_>) {
    if !try_say(line) {
        std::process::exit(0);
    }
}

/// Writes a line to stdout; false when stdout is closed. Other write errors end the program.
fn try_say(line: std::fmt::Arguments<'_>) -> bool {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_fmt(line).and_then(|()| out.write_all(b"\n")) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
        Err(e) => {
            eprintln!("error: writing to stdout: {e}");
            std::process::exit(1);
        }
    }
}

fn main() -> ExitCode {
    // Mesa's device-select Vulkan layer tries to reach a Wayland display and prints a spurious
    // "XDG_RUNTIME_DIR is invalid" error on headless machines; wgpu orders adapters itself.
    if std::env::var_os("NODEVICE_SELECT").is_none() && std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: nothing else runs yet; no other thread reads the environment.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Whether a flag of a subcommand was given on the command line (not left at its default).
    let given = |flag: &str| {
        matches.subcommand().and_then(|(_, m)| m.value_source(flag))
            == Some(clap::parser::ValueSource::CommandLine)
    };
    let result = match cli.command {
        Command::Info(a) => info(&a.device),
        Command::Verify(a) => verify(&a.device),
        Command::Train(a) => train(a, &given),
        Command::Sample(a) => sample(a),
        Command::Forward(a) => forward(a),
        Command::Bench(a) => bench(a),
        Command::Seq2seq(Seq2seqCommand::Train(a)) => seq2seq_train(a),
        Command::Seq2seq(Seq2seqCommand::Translate(a)) => translate(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn info(device: &str) -> rnn_gpu::Result<ExitCode> {
    if !matches!(device, "cpu" | "reference" | "gpu" | "auto") {
        Device::from_name(device)?;
    }
    if device != "gpu" {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        outln!("cpu:        {}", Device::Cpu.describe());
        outln!(
            "            {} sets the thread count; this machine has {threads} hardware threads",
            rnn_gpu::native::THREADS_ENV
        );
        outln!("reference:  {}", Device::Reference.describe());
        outln!("            the oracle every device is checked against; never chosen automatically");
        if device != "auto" {
            return Ok(ExitCode::SUCCESS);
        }
    }
    let adapters = list_adapters();
    if adapters.is_empty() {
        outln!("gpu:        no adapter found; auto runs on the native CPU device");
        return Ok(ExitCode::SUCCESS);
    }
    if device == "auto" {
        let hardware = adapters.iter().any(|a| a.device_type != wgpu::DeviceType::Cpu);
        outln!(
            "auto:       {}",
            if hardware {
                "the best hardware GPU adapter below"
            } else {
                "the native CPU device: the only adapters are software rasterizers, which --device gpu or RNN_GPU_ADAPTER still selects"
            }
        );
    }
    outln!("adapters (best first):");
    for a in &adapters {
        outln!("  {} ({:?}, {:?})", a.name, a.backend, a.device_type);
    }
    let ctx = GpuContext::new()?;
    let i = ctx.adapter_info();
    let l = ctx.limits();
    outln!("--device gpu:    {}", i.name);
    outln!("backend:         {:?}", i.backend);
    outln!("device type:     {:?}", i.device_type);
    outln!("driver:          {} {}", i.driver, i.driver_info);
    outln!("limits:");
    outln!("  max buffer size:                  {} bytes", l.max_buffer_size);
    outln!("  max storage buffer binding size:  {} bytes", l.max_storage_buffer_binding_size);
    outln!("  max storage buffers per stage:    {}", l.max_storage_buffers_per_shader_stage);
    outln!("  max workgroups per dimension:     {}", l.max_compute_workgroups_per_dimension);
    outln!("  max invocations per workgroup:    {}", l.max_compute_invocations_per_workgroup);
    outln!("  max workgroup storage:            {} bytes", l.max_compute_workgroup_storage_size);
    outln!("  timestamp queries:                {}", if ctx.has_timestamps() { "yes" } else { "no" });
    outln!(
        "shader modules:  {}",
        if ctx.checked_shaders() {
            "checked (wgpu's bounds clamps and loop counters; RNN_GPU_SHADERS=checked)"
        } else {
            "trusted (no runtime checks added; RNN_GPU_SHADERS=checked adds them)"
        }
    );
    outln!("kernels:         one design for every adapter: 128x128, 64x64 and 32x128 matmul tiles,");
    outln!("                 split-K for deep products, fused steps in 64-thread register tiles");
    outln!("                 (bench --verbose lists each dispatch of a training step)");
    Ok(ExitCode::SUCCESS)
}

fn verify(device: &str) -> rnn_gpu::Result<ExitCode> {
    let checks = match Device::from_name(device)? {
        Device::Cpu => {
            outln!("device: {}", Device::Cpu.describe());
            let mut checks = verify::native_checks()?;
            checks.extend(verify::gradient_checks(&Device::Cpu)?);
            checks
        }
        Device::Reference => {
            outln!("device: {}", Device::Reference.describe());
            verify::gradient_checks(&Device::Reference)?
        }
        Device::Gpu(ctx) => {
            outln!("adapter: {}", ctx.describe());
            verify::all_checks(&ctx)?
        }
    };
    outln!("{:<44} {:<22} {:>11} {:>9} {:>9}  result", "kernel", "shape", "max error", "atol", "rtol");
    let mut failed = 0;
    for c in &checks {
        let result = if c.pass() { "pass" } else { "FAIL" };
        outln!(
            "{:<44} {:<22} {:>11.3e} {:>9.1e} {:>9.1e}  {result}",
            c.kernel,
            c.shape,
            c.max_err,
            c.tol.atol,
            c.tol.rtol
        );
        if !c.pass() {
            failed += 1;
            outln!("    {c}");
        }
    }
    outln!("{} checks, {} passed, {failed} failed", checks.len(), checks.len() - failed);
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

fn parse_cell(name: &str) -> rnn_gpu::Result<Cell> {
    Cell::from_name(name).ok_or_else(|| rnn_gpu::Error::Invalid {
        op: "--cell",
        message: format!(
            "unknown cell {name:?}; use one of {}",
            Cell::ALL.map(Cell::name).join(", ")
        ),
    })
}

/// With `--resume`, the checkpoint decides the model and the optimizer: a flag given explicitly
/// that says otherwise is refused, named with both values, rather than silently ignored.
fn resume_conflicts(
    a: &TrainArgs,
    given: &dyn Fn(&str) -> bool,
) -> rnn_gpu::Result<(Cell, usize, usize, f32, Optimizer, Clip)> {
    let (spec, opt, clip) = rnn_gpu::train::text::checkpoint_settings(&a.out)?;
    let mut conflicts = Vec::new();
    let mut differs = |flag: &str, mine: String, theirs: String| {
        if given(flag) && mine != theirs {
            conflicts.push(format!("--{} {mine} (the checkpoint's: {theirs})", flag.replace('_', "-")));
        }
    };
    differs("cell", parse_cell(&a.cell)?.name().into(), spec.cell.name().into());
    differs("hidden", a.hidden.to_string(), spec.hidden.to_string());
    differs("layers", a.layers.to_string(), spec.layers.to_string());
    differs("dropout", a.dropout.to_string(), spec.dropout.to_string());
    let named = Optimizer::from_name(&a.optimizer, opt.lr()).map(|o| o == opt);
    differs(
        "optimizer",
        a.optimizer.clone(),
        if named == Some(true) { a.optimizer.clone() } else { opt.name().into() },
    );
    differs("lr", a.lr.to_string(), opt.lr().to_string());
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
    Ok((spec.cell, spec.hidden, spec.layers, spec.dropout, opt, clip))
}

fn train(a: TrainArgs, given: &dyn Fn(&str) -> bool) -> rnn_gpu::Result<ExitCode> {
    let (cell, hidden, layers, dropout, optimizer, clip) = if a.resume {
        resume_conflicts(&a, given)?
    } else {
        let optimizer = Optimizer::from_name(&a.optimizer, a.lr).ok_or_else(|| rnn_gpu::Error::Invalid {
            op: "--optimizer",
            message: format!(
                "unknown optimizer {:?}; use one of {}",
                a.optimizer,
                rnn_gpu::update::cli_names().join(", ")
            ),
        })?;
        let clip = Clip { max_norm: a.clip, value: a.clip_value };
        (parse_cell(&a.cell)?, a.hidden, a.layers, a.dropout, optimizer, clip)
    };
    let device = Device::from_name(&a.device)?;
    let cfg = TextTrainConfig {
        text: a.text,
        out: a.out,
        cell,
        hidden,
        layers,
        dropout,
        seq_len: a.seq_len,
        batch: a.batch,
        optimizer,
        clip,
        lr_decay: a.lr_decay,
        steps: a.steps,
        eval_every: a.eval_every,
        eval_batches: a.eval_batches,
        seed: a.seed,
        valid_fraction: 0.1,
        resume: a.resume,
    };
    outln!("device: {}", device.describe());
    outln!(
        "training a {}-layer {} of {} units on {} ({} steps of {}x{} characters, {} lr {}), writing to {}",
        cfg.layers,
        cfg.cell.name(),
        cfg.hidden,
        cfg.text.display(),
        cfg.steps,
        cfg.batch,
        cfg.seq_len,
        cfg.optimizer.name(),
        cfg.optimizer.lr(),
        cfg.out.display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Ctrl-C: finish the current step, save a checkpoint, exit.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
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
    let summary = train_text(&cfg, &device, &stop, &mut report)?;
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

fn sample(a: SampleArgs) -> rnn_gpu::Result<ExitCode> {
    let device = Device::from_name(&a.device)?;
    let (mut model, meta) = rnn_gpu::io::load_model(&a.model, &device, None)?;
    let chars = meta.get("vocab").ok_or_else(|| rnn_gpu::Error::File {
        path: a.model.clone(),
        message: "no vocabulary: not a character model".into(),
    })?;
    let vocab = rnn_gpu::data::checked_vocab(&a.model, "character", chars, model.spec().input.size())?;
    let corpus = TextCorpus { vocab: vocab.clone(), ids: Vec::new() };
    let prime = if a.prime.is_empty() { "\n".to_string() } else { a.prime.clone() };
    let ids = corpus.encode(&prime)?;
    let out =
        model.generate(&ids, a.len, Sampling { temperature: a.temperature, top_k: a.top_k, seed: a.seed })?;
    outln!("{}{}", prime, TextCorpus::decode(&vocab, &out));
    Ok(ExitCode::SUCCESS)
}

fn forward(a: ForwardArgs) -> rnn_gpu::Result<ExitCode> {
    use rnn_gpu::io::{self, TensorData};
    use rnn_gpu::{Batch, Error, InputKind, Start};
    let device = Device::from_name(&a.device)?;
    let cell = a.cell.as_deref().map(parse_cell).transpose()?;
    let (mut model, meta) = io::load_model(&a.model, &device, cell)?;
    let spec = model.spec().clone();
    let bare = !meta.contains_key("format");
    let file = io::read_tensors(&a.input)?;
    let bad = |m: String| Error::File { path: a.input.clone(), message: m };
    let floats = |name: &str| -> rnn_gpu::Result<Option<(Vec<usize>, Vec<f32>)>> {
        match file.tensors.get(name) {
            None => Ok(None),
            Some((s, TensorData::F32(v))) => Ok(Some((s.clone(), v.clone()))),
            Some((s, TensorData::Int(v))) => Ok(Some((s.clone(), v.iter().map(|&x| x as f32).collect()))),
        }
    };
    let ints = |name: &str| -> rnn_gpu::Result<Option<(Vec<usize>, Vec<i64>)>> {
        match file.tensors.get(name) {
            None => Ok(None),
            Some((s, TensorData::Int(v))) => Ok(Some((s.clone(), v.clone()))),
            Some(_) => Err(bad(format!("tensor {name} must hold integers"))),
        }
    };
    let mut batch = match spec.input {
        InputKind::Dense(_) => {
            let (shape, x) =
                floats("input")?.ok_or_else(|| bad("missing tensor `input` [T, B, I]".into()))?;
            let [t, b, _] = shape[..] else {
                return Err(bad(format!("tensor input has shape {shape:?}; expected [T, B, I]")));
            };
            Batch::dense(t, b, x)
        }
        InputKind::Tokens(_) => {
            let (shape, ids) = ints("tokens")?.ok_or_else(|| bad("missing tensor `tokens` [T, B]".into()))?;
            let [t, b] = shape[..] else {
                return Err(bad(format!("tensor tokens has shape {shape:?}; expected [T, B]")));
            };
            let ids: Vec<u32> = ids
                .iter()
                .map(|&v| u32::try_from(v).map_err(|_| bad(format!("token id {v} is negative or too large"))))
                .collect::<rnn_gpu::Result<_>>()?;
            Batch::tokens(t, b, ids)
        }
    };
    if let Some((_, l)) = ints("lengths")? {
        let lengths = l
            .iter()
            .map(|&v| usize::try_from(v).map_err(|_| bad(format!("length {v} is negative or too large"))))
            .collect::<rnn_gpu::Result<_>>()?;
        batch = batch.with_lengths(lengths);
    }
    let (t, b) = (batch.steps, batch.batch);
    let state_shape = vec![spec.state_rows(), b, spec.hidden];
    let input_name = match spec.input {
        InputKind::Dense(_) => "input",
        InputKind::Tokens(_) => "tokens",
    };
    only_known(&a.input, &file, &[input_name, "lengths", "h0", "c0"])?;
    let state = |name: &str| -> rnn_gpu::Result<Option<Vec<f32>>> {
        match floats(name)? {
            None => Ok(None),
            Some((shape, v)) if shape == state_shape => Ok(Some(v)),
            Some((shape, _)) => {
                Err(bad(format!("tensor {name} has shape {shape:?}; expected [L*D, B, H] = {state_shape:?}")))
            }
        }
    };
    let (h0, c0) = (state("h0")?, state("c0")?);
    if c0.is_some() && !spec.cell.has_cell_state() {
        return Err(bad(format!("tensor c0 is given, but a {} has no cell state", spec.cell.name())));
    }
    if c0.is_some() && h0.is_none() {
        return Err(bad("tensor c0 is given without h0; give both or neither".into()));
    }
    let start = match &h0 {
        Some(h) => Start::Given { h0: h, c0: c0.as_deref() },
        None => Start::Fresh,
    };
    let f = model.forward(&batch, start)?;
    let mut out = vec![
        ("output".to_string(), vec![t, b, spec.output_size()], TensorData::F32(f.output)),
        ("h_n".to_string(), state_shape.clone(), TensorData::F32(f.h_n)),
    ];
    if let Some(c) = f.c_n {
        out.push(("c_n".into(), state_shape.clone(), TensorData::F32(c)));
    }
    if let (Some(l), Some(head)) = (f.logits, spec.head) {
        let shape = match head.mode {
            rnn_gpu::OutputMode::ManyToMany => vec![t, b, head.outputs],
            rnn_gpu::OutputMode::ManyToOne => vec![b, head.outputs],
        };
        out.push(("logits".into(), shape, TensorData::F32(l)));
    }
    if let Some(path) = &a.grad_output {
        let g = io::read_tensors(path)?;
        only_known(path, &g, &["output", "h_n", "c_n"])?;
        let get = |name: &str, shape: &[usize]| -> rnn_gpu::Result<Option<Vec<f32>>> {
            let bad = |m: String| Error::File { path: path.clone(), message: m };
            match g.tensors.get(name) {
                None => Ok(None),
                Some((s, TensorData::F32(v))) if s == shape => Ok(Some(v.clone())),
                Some((s, TensorData::F32(_))) => {
                    Err(bad(format!("tensor {name} has shape {s:?}; expected {shape:?}")))
                }
                Some(_) => Err(bad(format!("tensor {name} holds integers; a gradient must be floats"))),
            }
        };
        let dy = get("output", &[t, b, spec.output_size()])?.ok_or_else(|| Error::File {
            path: path.clone(),
            message: "missing tensor `output` [T, B, D*H]".into(),
        })?;
        let d_hn = get("h_n", &state_shape)?;
        let d_cn = get("c_n", &state_shape)?;
        if d_cn.is_some() && !spec.cell.has_cell_state() {
            return Err(Error::File {
                path: path.clone(),
                message: format!("tensor c_n is given, but a {} has no cell state", spec.cell.name()),
            });
        }
        let grads = model.gradients(&batch, start, &dy, d_hn.as_deref(), d_cn.as_deref())?;
        for (name, v) in grads.params {
            let e = model.layout().get(&name)?;
            let file_name = if bare { name.trim_start_matches("rnn.").to_string() } else { name.clone() };
            out.push((format!("grad.{file_name}"), e.shape.clone(), TensorData::F32(v)));
        }
        if let Some(d) = grads.input {
            out.push(("grad.input".into(), vec![t, b, spec.input.size()], TensorData::F32(d)));
        }
        out.push(("grad.h0".into(), state_shape.clone(), TensorData::F32(grads.h0)));
        if let Some(d) = grads.c0 {
            out.push(("grad.c0".into(), state_shape, TensorData::F32(d)));
        }
    }
    io::write_tensors(&a.out, &out, &Default::default())?;
    outln!("wrote {} tensors to {}", out.len(), a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// Refuses a tensor file holding tensors `forward` would not read, naming the first: a misspelt
/// name (PyTorch's `h_0`) would otherwise be ignored without a word.
fn only_known(path: &std::path::Path, file: &rnn_gpu::io::TensorFile, known: &[&str]) -> rnn_gpu::Result<()> {
    match file.tensors.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(name) => Err(rnn_gpu::Error::File {
            path: path.to_path_buf(),
            message: format!("tensor {name} is not one forward reads; expected {}", known.join(", ")),
        }),
    }
}

fn seq2seq_train(a: PairTrainArgs) -> rnn_gpu::Result<ExitCode> {
    use rnn_gpu::seq2seq::train::{PairTrainConfig, train_pairs};
    let device = Device::from_name(&a.device)?;
    let cfg = PairTrainConfig {
        pairs: a.pairs,
        out: a.out,
        cell: parse_cell(&a.cell)?,
        embed: a.embed,
        hidden: a.hidden,
        layers: a.layers,
        bidirectional: !a.unidirectional,
        attention: !a.no_attention,
        batch: a.batch,
        steps: a.steps,
        lr: a.lr,
        clip: a.clip,
        eval_every: a.eval_every,
        seed: a.seed,
        resume: a.resume,
    };
    outln!("device: {}", device.describe());
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // Ctrl-C: finish the current step, save a checkpoint, exit.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    let summary = train_pairs(&cfg, &device, &stop, &mut |p| match p.accuracy {
        Some(acc) => outln!(
            "step {:>6}  loss {:.4}  held-out exact match {:.1}%  {:.0}s",
            p.step,
            p.loss,
            100.0 * acc,
            p.elapsed
        ),
        None => outln!("step {:>6}  loss {:.4}  {:.0}s", p.step, p.loss, p.elapsed),
    })?;
    if summary.interrupted {
        outln!("interrupted at step {}; checkpoint saved, continue with --resume", summary.step);
    }
    match summary.best {
        Some(best) => outln!(
            "best held-out exact match {:.1}%, model in {}",
            100.0 * best,
            summary.best_model.display()
        ),
        None => outln!("no evaluation yet; the checkpoint is in {}", cfg.out.display()),
    }
    Ok(ExitCode::SUCCESS)
}

fn translate(a: TranslateArgs) -> rnn_gpu::Result<ExitCode> {
    use std::io::BufRead;
    // Before anything is read: a bad count is the command's error, not a line's.
    rnn_gpu::seq2seq::check_decoding(a.beam, a.max_len)?;
    let device = Device::from_name(&a.device)?;
    let (mut model, meta) = rnn_gpu::seq2seq::Seq2Seq::load(&a.model, &device)?;
    let vocab = rnn_gpu::seq2seq::train::vocab_from_metadata(&a.model, &meta, model.spec())?;
    for (number, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.map_err(|e| rnn_gpu::Error::Io { path: "<stdin>".into(), source: e })?;
        if line.is_empty() {
            outln!("");
            continue;
        }
        match vocab.encode_src(&line) {
            Ok(src) => {
                let out = if a.beam == 1 {
                    model.greedy(&[src], a.max_len)?
                } else {
                    model.beam(&[src], a.beam, a.max_len)?
                };
                outln!("{}", vocab.decode_tgt(&out[0]));
            }
            // One bad line does not end the stream, and the output stays line for line with
            // the input: an empty line stands for it.
            Err(e) => {
                eprintln!("error: line {}: {e}", number + 1);
                outln!("");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bench(a: BenchArgs) -> rnn_gpu::Result<ExitCode> {
    use rnn_gpu::bench::{self, CaseResult, DeviceResult};
    let mut devices = match a.device.as_str() {
        "all" => {
            let mut d = Vec::new();
            match GpuContext::new() {
                Ok(ctx) => d.push(Device::Gpu(ctx)),
                Err(e) => outln!("no GPU device: {e}"),
            }
            d.push(Device::Cpu);
            d
        }
        name => vec![Device::from_name(name)?],
    };
    if a.reference && !devices.iter().any(|d| matches!(d, Device::Reference)) {
        devices.push(Device::Reference);
    }
    for d in &devices {
        outln!("device {}: {}", d.name(), d.describe());
    }
    let gemm = bench::gemm_rate(2048)?;
    outln!("native f32 GEMM 2048x2048x2048 on this machine: {gemm:.1} GFLOP/s");
    outln!(
        "GFLOP/s count matrix-product multiply-adds only: forward 2*T*B*(G*H^2 + H*V), training step 3x that"
    );
    outln!(
        "each device is first checked against the reference: loss and gradient norm of 3 training steps at the case's size (at most {} time steps)",
        bench::CHECK_STEPS
    );
    let cases: Vec<_> = if a.quick { bench::quick_cases() } else { bench::standard_cases() }
        .into_iter()
        .filter(|c| a.only.as_ref().is_none_or(|o| c.name().contains(o.as_str())))
        .collect();
    outln!(
        "{:<24} {:<10} {:>10} {:>10} {:>8} {:>10} {:>10} {:>8}",
        "case",
        "device",
        "train ms",
        "tok/s",
        "GFLOP/s",
        "fwd ms",
        "tok/s",
        "GFLOP/s"
    );
    let row = |name: &str, dev: &str, d: &DeviceResult| {
        outln!(
            "{:<24} {:<10} {:>10.1} {:>10.0} {:>8.2} {:>10.1} {:>10.0} {:>8.2}",
            name,
            dev,
            d.train.seconds * 1e3,
            d.train.tokens_per_sec,
            d.train.gflops,
            d.forward.seconds * 1e3,
            d.forward.tokens_per_sec,
            d.forward.gflops
        )
    };
    let mut results = Vec::new();
    for case in cases {
        let mut timed: Vec<DeviceResult> = Vec::new();
        for (i, device) in devices.iter().enumerate() {
            let reference = matches!(device, Device::Reference);
            let check = if reference { None } else { Some(bench::check(&case, device)?) };
            let (warmup, runs) =
                if reference { (a.warmup.min(1), a.runs.min(3)) } else { (a.warmup, a.runs) };
            let mut d = bench::time(&case, device, warmup, runs)?;
            d.check_error = check;
            let name = if i == 0 { case.name() } else { String::new() };
            row(&name, device.name(), &d);
            if let Device::Gpu(_) = device {
                gpu_details(&a, &case, device, &d);
            }
            timed.push(d);
        }
        // How many times faster each device is than each one after it, by tokens per second.
        for (i, x) in timed.iter().enumerate() {
            for y in &timed[i + 1..] {
                outln!(
                    "{:<24} {:<10} {:>10} {:>9.2}x {:>8} {:>10} {:>9.2}x",
                    "",
                    format!("{}/{}", x.name, y.name),
                    "",
                    x.train.tokens_per_sec / y.train.tokens_per_sec,
                    "",
                    "",
                    x.forward.tokens_per_sec / y.forward.tokens_per_sec
                );
            }
        }
        results.push(CaseResult { case, devices: timed });
    }
    if let Some(path) = &a.json {
        let date = std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        rnn_gpu::io::write_atomic(path, bench::to_json(&results, gemm, &date).as_bytes())?;
        outln!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `--verbose` and `--profile` on the GPU: what a training step does, and where its time goes.
fn gpu_details(a: &BenchArgs, case: &rnn_gpu::bench::Case, gpu: &Device, g: &rnn_gpu::bench::DeviceResult) {
    use rnn_gpu::bench;
    if a.verbose {
        if let Some(s) = g.per_step {
            outln!(
                "    per training step after warm-up: {} dispatches ({} recorded in the program), {} submit(s), {} host wait(s), {} bytes allocated; checked against the reference: max relative difference of the loss and gradient norm {:.1e}",
                s.dispatches,
                g.dispatches().unwrap_or(0),
                s.submits,
                s.host_waits,
                s.bytes_allocated,
                g.check_error.unwrap_or(0.0)
            );
        }
        outln!(
            "    {:<22} {:>6} {:>8} {:>11} {:>16} {:>12}",
            "kernel",
            "count",
            "threads",
            "workgroups",
            "grid",
            "MACs/thread"
        );
        for (m, count) in g.mapping_summary() {
            outln!(
                "    {:<22} {:>6} {:>8} {:>11} {:>16} {:>12}",
                m.kernel,
                count,
                m.threads,
                m.workgroups(),
                format!("{}x{}x{}", m.groups[0], m.groups[1], m.groups[2]),
                if m.macs == 0 { "-".to_string() } else { m.macs_per_thread().to_string() }
            );
        }
    }
    if a.profile {
        match bench::profile(case, gpu) {
            Ok(p) => {
                let total = p.kernel_seconds();
                outln!(
                    "    GPU time of one training step by kernel: {:.1} ms in the kernels, {:.1} ms from the first one's start to the last one's end ({:.1} ms between kernels: copies, the driver's work per dispatch)",
                    total * 1e3,
                    p.span * 1e3,
                    (p.span - total).max(0.0) * 1e3
                );
                for (name, count, secs) in p.kernels {
                    outln!(
                        "      {:<24} x{:<4} {:>9.2} ms {:>5.1}%",
                        name,
                        count,
                        secs * 1e3,
                        100.0 * secs / total
                    );
                }
            }
            Err(e) => outln!("    no profile: {e}"),
        }
    }
}
