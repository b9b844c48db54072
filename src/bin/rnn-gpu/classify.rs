//! `classify train` and `classify predict`: many-to-one text classifiers on `text<TAB>label`
//! lines, tokens through a learned embedding.

use super::*;
use rnn_gpu::data::{LabeledText, TokenVocab, Tokens, padded_batch};
use rnn_gpu::io::Metadata;
use rnn_gpu::rng::Rng;
use rnn_gpu::{Head, InputKind, Loss, Model, ModelSpec, OutputMode, Start};

#[derive(Subcommand)]
pub(crate) enum ClassifyCommand {
    /// Train on `text<TAB>label` lines (by default the bundled review sentiment data), holding
    /// out a share to measure accuracy.
    Train(ClassifyTrainArgs),
    /// Label lines from standard input, one output line (`label<TAB>probability`) per input line.
    Predict(ClassifyPredictArgs),
    /// A trained classifier's loss and accuracy on a file of `text<TAB>label` lines.
    Test(ClassifyTestArgs),
}

#[derive(Args)]
pub(crate) struct ClassifyTestArgs {
    #[arg(long, default_value = "runs/classify/best.safetensors")]
    model: PathBuf,
    /// `text<TAB>label` lines, with the model's labels.
    #[arg(long)]
    data: PathBuf,
    /// cpu (native), gpu, reference, or auto (a hardware GPU when there is one, else cpu).
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Args)]
pub(crate) struct ClassifyTrainArgs {
    #[arg(long, default_value = "data/sentiment.tsv")]
    data: PathBuf,
    /// Folder for best.safetensors (the model with the best held-out accuracy), loss.csv and
    /// loss.png.
    #[arg(long, default_value = "runs/classify")]
    out: PathBuf,
    /// word (lowercased words) or char.
    #[arg(long, default_value = "word")]
    tokens: String,
    /// At most this many distinct tokens (the rest read as one unknown token).
    #[arg(long, default_value_t = 4000)]
    vocab: usize,
    /// Tokens seen fewer times in the training texts read as unknown.
    #[arg(long, default_value_t = 2)]
    min_count: usize,
    /// Tokens read of each text (the first ones).
    #[arg(long, default_value_t = 64)]
    max_len: usize,
    #[arg(long, default_value = "lstm")]
    cell: String,
    /// Width of the token embedding.
    #[arg(long, default_value_t = 64)]
    embed: usize,
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    #[arg(long, default_value_t = 1)]
    layers: usize,
    /// One direction (bidirectional by default).
    #[arg(long)]
    unidirectional: bool,
    /// Dropout on the final states before the head, in training.
    #[arg(long, default_value_t = 0.3)]
    dropout: f32,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 3e-3)]
    lr: f32,
    #[arg(long, default_value_t = 600)]
    steps: usize,
    /// Measure the held-out loss and accuracy every this many steps.
    #[arg(long, default_value_t = 50)]
    eval_every: usize,
    /// Share of the texts held out (drawn at random from the seed).
    #[arg(long, default_value_t = 0.1)]
    held_out: f64,
    /// cpu (native), gpu, reference, or auto (a hardware GPU when there is one, else cpu).
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args)]
pub(crate) struct ClassifyPredictArgs {
    #[arg(long, default_value = "runs/classify/best.safetensors")]
    model: PathBuf,
    /// cpu (native), gpu, reference, or auto (a hardware GPU when there is one, else cpu).
    #[arg(long, default_value = "auto")]
    device: String,
}

fn invalid(message: String) -> rnn_gpu::Error {
    rnn_gpu::Error::Invalid { op: "classify", message }
}

/// The held-out loss and accuracy of `model` on `texts`, in batches of `batch`.
fn held_out(model: &mut Model, texts: &[(Vec<u32>, u32)], batch: usize) -> rnn_gpu::Result<(f32, f32)> {
    let (mut loss, mut right) = (0.0f64, 0usize);
    for chunk in texts.chunks(batch) {
        let seqs: Vec<Vec<u32>> = chunk.iter().map(|(s, _)| s.clone()).collect();
        let b = padded_batch(&seqs).with_classes(chunk.iter().map(|(_, c)| *c).collect());
        loss += model.evaluate(&b, Start::Fresh)? as f64 * chunk.len() as f64;
        let logits = model.logits(&b, Start::Fresh)?;
        let o = logits.len() / chunk.len();
        for (row, (_, c)) in logits.chunks(o).zip(chunk) {
            let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
            right += (best as u32 == *c) as usize;
        }
    }
    Ok(((loss / texts.len() as f64) as f32, right as f32 / texts.len() as f32))
}

pub(crate) fn classify_train(a: ClassifyTrainArgs) -> rnn_gpu::Result<ExitCode> {
    for (what, v) in [
        ("--batch", a.batch),
        ("--steps", a.steps),
        ("--eval-every", a.eval_every),
        ("--max-len", a.max_len),
        ("--vocab", a.vocab),
    ] {
        if v == 0 {
            return Err(invalid(format!("{what} must be at least 1")));
        }
    }
    if !(a.held_out > 0.0 && a.held_out < 1.0) {
        return Err(invalid(format!("--held-out {} must be in (0, 1)", a.held_out)));
    }
    let tokens = Tokens::from_name(&a.tokens)?;
    let content = std::fs::read_to_string(&a.data)
        .map_err(|e| rnn_gpu::Error::Io { path: a.data.clone(), source: e })?;
    let data = LabeledText::parse(&a.data.display().to_string(), &content, None)?;
    let mut rng = Rng::seed_from_u64(a.seed);
    let mut order: Vec<usize> = (0..data.texts.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let cut = ((data.texts.len() as f64) * a.held_out).round().max(1.0) as usize;
    if cut >= data.texts.len() {
        return Err(invalid(format!("{} texts are too few to hold out {}", data.texts.len(), a.held_out)));
    }
    let (test_idx, train_idx) = order.split_at(cut);
    let train_texts: Vec<String> = train_idx.iter().map(|&i| data.texts[i].clone()).collect();
    let vocab = TokenVocab::build(tokens, &train_texts, a.vocab, a.min_count);
    let encode = |idx: &[usize]| -> Vec<(Vec<u32>, u32)> {
        idx.iter().map(|&i| (vocab.encode(&data.texts[i], a.max_len), data.classes[i])).collect()
    };
    let (train, test) = (encode(train_idx), encode(test_idx));
    let spec = ModelSpec {
        layers: a.layers,
        bidirectional: !a.unidirectional,
        output_dropout: a.dropout,
        head: Some(Head {
            outputs: data.labels.len(),
            mode: OutputMode::ManyToOne,
            loss: Loss::CrossEntropy,
        }),
        ..ModelSpec::new(
            parse_cell(&a.cell)?,
            InputKind::Embedding { vocab: vocab.len(), dim: a.embed },
            a.hidden,
        )
    };
    let device = Device::from_name(&a.device)?;
    let mut model = Model::new(spec, &device, a.seed)?;
    model.set_optimizer(Optimizer::adam(a.lr), Clip { max_norm: 1.0, value: 0.0 })?;
    let majority = {
        let mut counts = vec![0usize; data.labels.len()];
        test.iter().for_each(|(_, c)| counts[*c as usize] += 1);
        *counts.iter().max().unwrap_or(&0) as f32 / test.len() as f32
    };
    outln!("device: {}", device.describe());
    outln!(
        "classifying {} texts of {} into {} ({}); {} held out; {} {} tokens; a {}{}-layer {} of {} units over a {}-wide embedding",
        data.texts.len(),
        a.data.display(),
        data.labels.len(),
        data.labels.join(", "),
        test.len(),
        vocab.len(),
        tokens.name(),
        if a.unidirectional { "" } else { "bidirectional " },
        a.layers,
        model.spec().cell.name(),
        a.hidden,
        a.embed
    );
    std::fs::create_dir_all(&a.out).map_err(|e| rnn_gpu::Error::Io { path: a.out.clone(), source: e })?;
    let best_path = a.out.join("best.safetensors");
    let mut meta = Metadata::new();
    meta.insert("classify.tokens".into(), tokens.name().into());
    meta.insert("classify.words".into(), vocab.words.join("\n"));
    meta.insert("classify.labels".into(), data.labels.join("\n"));
    meta.insert("classify.max_len".into(), a.max_len.to_string());
    let (mut best, mut csv) = (-1.0f32, String::from("step,train_loss,held_out_loss,accuracy,elapsed_s\n"));
    let (mut train_curve, mut test_curve) = (Vec::new(), Vec::new());
    let start = std::time::Instant::now();
    for step in 1..=a.steps {
        let picks: Vec<&(Vec<u32>, u32)> =
            (0..a.batch.min(train.len())).map(|_| &train[rng.below(train.len())]).collect();
        let seqs: Vec<Vec<u32>> = picks.iter().map(|(s, _)| s.clone()).collect();
        let batch = padded_batch(&seqs).with_classes(picks.iter().map(|(_, c)| *c).collect());
        model.train_step(&batch, Start::Fresh)?;
        if step % a.eval_every == 0 || step == a.steps {
            let train_loss = model.stats()?.loss;
            let (loss, accuracy) = held_out(&mut model, &test, a.batch)?;
            let elapsed = start.elapsed().as_secs_f64();
            if accuracy > best {
                best = accuracy;
                rnn_gpu::io::save_model(&best_path, &mut model, &meta)?;
            }
            csv.push_str(&format!("{step},{train_loss:.5},{loss:.5},{accuracy:.4},{elapsed:.1}\n"));
            rnn_gpu::io::write_atomic(&a.out.join("loss.csv"), csv.as_bytes())?;
            train_curve.push((step as f64, train_loss as f64));
            test_curve.push((step as f64, loss as f64));
            rnn_gpu::train::plot::loss_curve(&a.out.join("loss.png"), &train_curve, &test_curve)?;
            outln!(
                "step {step:>6}  train loss {train_loss:.4}  held-out loss {loss:.4}  accuracy {:.1}%  {elapsed:.0}s",
                100.0 * accuracy
            );
        }
    }
    outln!(
        "done: {} steps in {:.0}s, best held-out accuracy {:.1}% (the majority label's share: {:.1}%), model in {}",
        a.steps,
        start.elapsed().as_secs_f64(),
        100.0 * best,
        100.0 * majority,
        best_path.display()
    );
    outln!("loss curve: {}/loss.png and loss.csv", a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// A classifier `classify train` wrote: the model, its vocabulary, labels and text length.
struct Classifier {
    model: Model,
    vocab: TokenVocab,
    labels: Vec<String>,
    max_len: usize,
}

pub(crate) fn classify_test(a: ClassifyTestArgs) -> rnn_gpu::Result<ExitCode> {
    let device = Device::from_name(&a.device)?;
    let mut c = load_classifier(&a.model, &device)?;
    let content = std::fs::read_to_string(&a.data)
        .map_err(|e| rnn_gpu::Error::Io { path: a.data.clone(), source: e })?;
    let data = LabeledText::parse(&a.data.display().to_string(), &content, Some(&c.labels))?;
    let texts: Vec<(Vec<u32>, u32)> =
        data.texts.iter().zip(&data.classes).map(|(t, &k)| (c.vocab.encode(t, c.max_len), k)).collect();
    let (loss, accuracy) = held_out(&mut c.model, &texts, 64)?;
    outln!("{}: {} texts, loss {loss:.4}, accuracy {:.1}%", a.data.display(), texts.len(), 100.0 * accuracy);
    Ok(ExitCode::SUCCESS)
}

fn load_classifier(path: &std::path::Path, device: &Device) -> rnn_gpu::Result<Classifier> {
    let (model, meta) = rnn_gpu::io::load_model(path, device, None)?;
    let field = |k: &str| {
        meta.get(k).cloned().ok_or_else(|| rnn_gpu::Error::File {
            path: path.to_path_buf(),
            message: format!("no `{k}`: not a model `classify train` wrote"),
        })
    };
    let tokens = Tokens::from_name(&field("classify.tokens")?)?;
    let words: Vec<String> =
        field("classify.words")?.split('\n').filter(|w| !w.is_empty()).map(str::to_string).collect();
    let labels: Vec<String> = field("classify.labels")?.split('\n').map(str::to_string).collect();
    let max_len: usize = field("classify.max_len")?.parse().map_err(|_| rnn_gpu::Error::File {
        path: path.to_path_buf(),
        message: "`classify.max_len` is not a count".into(),
    })?;
    let vocab = TokenVocab::from_words(tokens, words);
    let spec = model.spec().clone();
    if spec.input != (InputKind::Embedding { vocab: vocab.len(), dim: spec.input.size() })
        || spec.head.map(|h| h.outputs) != Some(labels.len())
    {
        return Err(rnn_gpu::Error::File {
            path: path.to_path_buf(),
            message: "its vocabulary or labels do not fit its model".into(),
        });
    }
    Ok(Classifier { model, vocab, labels, max_len })
}

pub(crate) fn classify_predict(a: ClassifyPredictArgs) -> rnn_gpu::Result<ExitCode> {
    let device = Device::from_name(&a.device)?;
    let Classifier { mut model, vocab, labels, max_len } = load_classifier(&a.model, &device)?;
    let lines: Vec<String> = std::io::stdin()
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|e| rnn_gpu::Error::Io { path: "standard input".into(), source: e })?;
    // In batches of texts; a blank line gets a blank output line, so that the output stays line
    // for line with the input.
    for chunk in lines.chunks(64) {
        let texts: Vec<&String> = chunk.iter().filter(|l| !l.trim().is_empty()).collect();
        let mut probs = Vec::new();
        if !texts.is_empty() {
            let seqs: Vec<Vec<u32>> = texts.iter().map(|t| vocab.encode(t, max_len)).collect();
            probs = model.logits(&padded_batch(&seqs), Start::Fresh)?;
        }
        let mut rows = probs.chunks(labels.len().max(1));
        for line in chunk {
            if line.trim().is_empty() {
                outln!("");
                continue;
            }
            let row = rows.next().expect("one row per text");
            let top = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|v| (v - top).exp()).sum();
            let (best, _) = row.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).expect("labels");
            outln!("{}\t{:.3}", labels[best], 1.0 / sum);
        }
    }
    Ok(ExitCode::SUCCESS)
}
