//! The `rnn-gpu` command: thin over the library. Parses, calls, reports.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use rnn_gpu::data::TextCorpus;
use rnn_gpu::gpu::{GpuContext, list_adapters};
use rnn_gpu::train::Schedule;
use rnn_gpu::train::text::{CharModel, Progress, Settings, TextTrainConfig, train_text};
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
    /// A trained character model's loss and perplexity on a text file.
    Eval(EvalArgs),
    /// Run a model on tensors from a safetensors file, and backpropagate given output gradients.
    Forward(ForwardArgs),
    /// Time the standard cases on every device, each checked against the reference first.
    Bench(BenchArgs),
    /// Sequence to sequence: train an encoder-decoder on text pairs, or translate with one.
    #[command(subcommand)]
    Seq2seq(Seq2seqCommand),
    /// Forecast a column of a CSV file one step ahead; test on its last values against the
    /// seasonal-naive forecast.
    Forecast(ForecastArgs),
    /// Text classification: train a many-to-one classifier on labeled lines, or label lines.
    #[command(subcommand)]
    Classify(ClassifyCommand),
}

/// `println!` for the command's output: a closed stdout (`| head`) ends the program quietly, as
/// other Unix tools do, instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {
        say(format_args!($($arg)*))
    };
}

mod classify;
mod devices;
mod forward;
mod job;
mod pairs;
mod series;
mod text;

use classify::*;
use devices::*;
use forward::*;
use job::Job;
use pairs::*;
use series::*;
use text::*;

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

/// The library's messages (`log`, info and up) on stderr, as `rnn-gpu: <message>`.
struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info && m.target().starts_with("rnn_gpu")
    }

    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("rnn-gpu: {}", r.args());
        }
    }

    fn flush(&self) {}
}

fn main() -> ExitCode {
    static LOGGER: Stderr = Stderr;
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
    }
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
        Command::Eval(a) => eval(a),
        Command::Forward(a) => forward(a),
        Command::Bench(a) => bench(a),
        Command::Seq2seq(Seq2seqCommand::Train(a)) => seq2seq_train(a),
        Command::Seq2seq(Seq2seqCommand::Translate(a)) => translate(a),
        Command::Forecast(a) => forecast(a),
        Command::Classify(ClassifyCommand::Train(a)) => classify_train(a),
        Command::Classify(ClassifyCommand::Predict(a)) => classify_predict(a),
        Command::Classify(ClassifyCommand::Test(a)) => classify_test(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
