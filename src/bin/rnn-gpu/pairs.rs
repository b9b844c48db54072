//! `seq2seq train` and `seq2seq translate`: encoder-decoders on text pairs.

use super::*;

#[derive(Subcommand)]
pub(crate) enum Seq2seqCommand {
    /// Train on a file of `source<TAB>target` lines (character level).
    Train(PairTrainArgs),
    /// Translate lines from standard input, one output line per input line.
    Translate(TranslateArgs),
}

#[derive(Args)]
pub(crate) struct PairTrainArgs {
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
    /// Train data-parallel as one rank of `mpirun -np N rnn-gpu seq2seq train --distributed ...`
    /// (built with the `mpi` feature): each rank takes --batch/N of each batch.
    #[arg(long)]
    distributed: bool,
}

#[derive(Args)]
pub(crate) struct TranslateArgs {
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

pub(crate) fn seq2seq_train(a: PairTrainArgs) -> rnn_gpu::Result<ExitCode> {
    let job = Job::join(a.distributed)?;
    let result = seq2seq_train_as(a, &job);
    job.finish(result)
}

fn seq2seq_train_as(a: PairTrainArgs, job: &Job) -> rnn_gpu::Result<ExitCode> {
    use rnn_gpu::seq2seq::train::{PairTrainConfig, train_pairs};
    let device = Device::from_name_at(&a.device, job.local_rank())?;
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
    // Ctrl-C or SIGTERM: finish the current step, save a checkpoint, exit (every rank together).
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed));
    if job.rank() != 0 {
        // The other ranks train quietly; rank 0 reports for the job.
        train_pairs(&cfg, &device, job.comm(), &stop, &mut |_| {})?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!("device: {}", device.describe());
    let summary = train_pairs(&cfg, &device, job.comm(), &stop, &mut |p| match p.accuracy {
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

pub(crate) fn translate(a: TranslateArgs) -> rnn_gpu::Result<ExitCode> {
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
