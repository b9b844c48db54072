//! Normalising dates written in many human formats to ISO form with an encoder-decoder:
//! "3rd of March 1998", "Mar 3, 98", "03/03/1998", "Tuesday, March 3, 1998" -> "1998-03-03".
//!
//! The pairs are generated here from a seed; the held-out dates never occur in training (in any
//! format). The same model is trained with and without attention, and each reports its
//! exact-match accuracy on the held-out pairs.
//!
//!     cargo run --release --example dates                      # both models, on the GPU if any
//!     cargo run --release --example dates -- --steps 500       # shorter
//!     cargo run --release --example dates -- --write-pairs dates.tsv   # pairs for `rnn-gpu seq2seq`

use std::collections::HashSet;
use std::time::Instant;

use rnn_gpu::data::PairVocab;
use rnn_gpu::rng::Rng;
use rnn_gpu::seq2seq::{Seq2Seq, Seq2SeqSpec};
use rnn_gpu::{Cell, Clip, Device, Optimizer};

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

fn leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn month_days(y: i64, m: usize) -> i64 {
    [31, if leap(y) { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m]
}

/// The date `n` days after 1950-01-01 (a Sunday): (year, month 0-based, day), weekday 0 = Monday.
fn date(mut n: i64) -> (i64, usize, i64, usize) {
    let weekday = ((n + 6) % 7) as usize;
    let mut y = 1950;
    while n >= if leap(y) { 366 } else { 365 } {
        n -= if leap(y) { 366 } else { 365 };
        y += 1;
    }
    let mut m = 0;
    while n >= month_days(y, m) {
        n -= month_days(y, m);
        m += 1;
    }
    (y, m, n + 1, weekday)
}

fn ordinal(d: i64) -> String {
    let sfx = match (d % 10, d % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{d}{sfx}")
}

/// One of 14 human formats of the date (US order with slashes, European with dots).
fn human(rng: &mut Rng, (y, m, d, wd): (i64, usize, i64, usize)) -> String {
    let month = MONTHS[m];
    let mon = &month[..3];
    let yy = y % 100;
    match rng.below(14) {
        0 => format!("{} of {month} {y}", ordinal(d)),
        1 => format!("{month} {d}, {y}"),
        2 => format!("{mon} {d}, {yy:02}"),
        3 => format!("{:02}/{d:02}/{y}", m + 1),
        4 => format!("{}/{d}/{yy:02}", m + 1),
        5 => format!("{d:02}.{:02}.{y}", m + 1),
        6 => format!("{d} {month} {y}"),
        7 => format!("{}, {month} {d}, {y}", DAYS[wd]),
        8 => format!("{month} {}, {y}", ordinal(d)),
        9 => format!("{d} {mon} {y}"),
        10 => format!("{y}/{:02}/{d:02}", m + 1),
        11 => format!("{}, {d} {mon} {yy:02}", &DAYS[wd][..3]),
        12 => format!("{d}-{mon}-{y}").to_lowercase(),
        _ => format!("{y}-{:02}-{d:02}", m + 1),
    }
}

fn iso((y, m, d, _): (i64, usize, i64, usize)) -> String {
    format!("{y}-{:02}-{d:02}", m + 1)
}

/// `n_train` training pairs and `n_test` held-out pairs whose dates never occur in training.
/// Two-digit years are read as 1950..2049, the span of the generated dates.
fn generate(seed: u64, n_train: usize, n_test: usize) -> (Vec<(String, String)>, Vec<(String, String)>) {
    let mut rng = Rng::seed_from_u64(seed);
    let span = 100 * 365 + 24;
    let mut held: HashSet<i64> = HashSet::new();
    let mut test = Vec::new();
    while test.len() < n_test {
        let n = rng.below(span as usize) as i64;
        if held.insert(n) {
            let dt = date(n);
            test.push((human(&mut rng, dt), iso(dt)));
        }
    }
    let mut train = Vec::new();
    while train.len() < n_train {
        let n = rng.below(span as usize) as i64;
        if !held.contains(&n) {
            let dt = date(n);
            train.push((human(&mut rng, dt), iso(dt)));
        }
    }
    (train, test)
}

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() -> rnn_gpu::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let steps: usize = arg(&args, "--steps", 1000);
    let batch: usize = arg(&args, "--batch", 64);
    let (train, test) = generate(arg(&args, "--seed", 7), 20_000, 1_000);
    if let Some(path) = args.iter().position(|a| a == "--write-pairs").and_then(|i| args.get(i + 1)) {
        let text: String = train.iter().map(|(s, t)| format!("{s}\t{t}\n")).collect();
        rnn_gpu::io::write_atomic(std::path::Path::new(path), text.as_bytes())?;
        println!("wrote {} pairs to {path}", train.len());
        return Ok(());
    }
    for (s, t) in train.iter().take(6) {
        println!("  {s:<32} -> {t}");
    }
    let all: Vec<(String, String)> = train.iter().chain(&test).cloned().collect();
    let vocab = PairVocab::from_pairs(&all);
    let train_ids = vocab.encode_pairs(&train)?;
    let test_src: Vec<Vec<u32>> =
        test.iter().map(|p| vocab.encode_src(&p.0)).collect::<rnn_gpu::Result<_>>()?;
    let device = Device::auto();
    println!("device: {}", device.describe());
    for attention in [true, false] {
        let spec = Seq2SeqSpec {
            cell: Cell::Gru,
            src_vocab: vocab.src_size(),
            tgt_vocab: vocab.tgt_size(),
            embed: 32,
            enc_hidden: 64,
            enc_layers: 1,
            bidirectional: true,
            dec_hidden: 64,
            dec_layers: 1,
            attention,
            dropout: 0.0,
            bos: vocab.bos(),
            eos: vocab.eos(),
        };
        let mut model = Seq2Seq::new(spec, &device, 1)?;
        model.set_optimizer(Optimizer::adam(3e-3), Clip { max_norm: 1.0, value: 0.0 })?;
        let mut rng = Rng::seed_from_u64(11);
        let start = Instant::now();
        for step in 1..=steps {
            let pairs: Vec<(Vec<u32>, Vec<u32>)> =
                (0..batch).map(|_| train_ids[rng.below(train_ids.len())].clone()).collect();
            model.train_step(&pairs)?;
            if step % 500 == 0 {
                println!("  attention {attention}: step {step} loss {:.4}", model.stats()?.loss);
            }
        }
        let out = model.greedy(&test_src, 12)?;
        let correct = out.iter().zip(&test).filter(|(o, p)| vocab.decode_tgt(o) == p.1).count();
        println!(
            "attention {attention}: held-out exact match {correct}/{} = {:.1}% ({steps} steps of {batch}, {:.0}s)",
            test.len(),
            100.0 * correct as f64 / test.len() as f64,
            start.elapsed().as_secs_f64()
        );
        for ((o, p), _) in out.iter().zip(&test).zip(0..3) {
            println!("  {:<32} -> {}", p.0, vocab.decode_tgt(o));
        }
    }
    Ok(())
}
