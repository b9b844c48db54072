//! `forecast`: one-step-ahead forecasting of a column of a CSV file, tested on its last values
//! against the seasonal-naive forecast.
//!
//! The model reads the seasonal differences `d_t = z_t - z_{t-S}` of the last `--window` steps
//! (z the series, or its logarithm with `--log`, for a series whose swings grow with its level),
//! scaled by their training standard deviation, and predicts the next one; the forecast is
//! `z_{t-S} + d_t`, so that predicting a difference of zero is the seasonal-naive forecast.

use super::*;
use rnn_gpu::io::write_atomic;
use rnn_gpu::rng::Rng;
use rnn_gpu::{Batch, Head, InputKind, Loss, Model, ModelSpec, OutputMode, Start};

#[derive(Args)]
pub(crate) struct ForecastArgs {
    /// A CSV file with a header row.
    #[arg(long, default_value = "data/airline-passengers.csv")]
    data: PathBuf,
    /// The column to forecast, by name or position (from 0).
    #[arg(long, default_value = "passengers")]
    column: String,
    /// The season's length in steps (12 for monthly data with a yearly pattern).
    #[arg(long, default_value_t = 12)]
    season: usize,
    /// Forecast the logarithm's differences (for a positive series whose swings grow with it).
    #[arg(long)]
    log: bool,
    /// Past differences the model reads for each forecast.
    #[arg(long, default_value_t = 12)]
    window: usize,
    /// The last values, forecast one step ahead each and never trained on.
    #[arg(long, default_value_t = 24)]
    test: usize,
    #[arg(long, default_value = "lstm")]
    cell: String,
    #[arg(long, default_value_t = 16)]
    hidden: usize,
    #[arg(long, default_value_t = 300)]
    steps: usize,
    #[arg(long, default_value_t = 100)]
    eval_every: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 3e-3)]
    lr: f32,
    /// Folder for loss.csv and loss.png.
    #[arg(long, default_value = "runs/forecast")]
    out: PathBuf,
    /// cpu (native), gpu, reference, or auto (a hardware GPU when there is one, else cpu).
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn invalid(message: String) -> rnn_gpu::Error {
    rnn_gpu::Error::Invalid { op: "forecast", message }
}

pub(crate) fn forecast(a: ForecastArgs) -> rnn_gpu::Result<ExitCode> {
    for (what, v) in
        [("--season", a.season), ("--window", a.window), ("--test", a.test), ("--steps", a.steps)]
    {
        if v == 0 {
            return Err(invalid(format!("{what} must be at least 1")));
        }
    }
    for (what, v) in [("--hidden", a.hidden), ("--batch", a.batch), ("--eval-every", a.eval_every)] {
        if v == 0 {
            return Err(invalid(format!("{what} must be at least 1")));
        }
    }
    let content = std::fs::read_to_string(&a.data)
        .map_err(|e| rnn_gpu::Error::Io { path: a.data.clone(), source: e })?;
    let y = rnn_gpu::data::csv_column(&a.data.display().to_string(), &content, &a.column)?;
    if a.log {
        if let Some((i, v)) = y.iter().enumerate().find(|(_, v)| **v <= 0.0) {
            return Err(invalid(format!("--log needs positive values; value {i} of {} is {v}", a.column)));
        }
    }
    let z: Vec<f64> = y.iter().map(|&v| if a.log { v.ln() } else { v }).collect();
    let (n, s, w) = (z.len(), a.season, a.window);
    // The first forecast needs `window` differences, each `season` back.
    let first = s + w;
    let split = n.checked_sub(a.test).filter(|&split| split > first + 1).ok_or_else(|| {
        invalid(format!(
            "{} values are too few to test the last {} with a season of {s} and a window of {w}",
            n, a.test
        ))
    })?;
    let d = |t: usize| z[t] - z[t - s];
    let train_ts: Vec<usize> = (first..split).collect();
    let mean = train_ts.iter().map(|&t| d(t)).sum::<f64>() / train_ts.len() as f64;
    let std = (train_ts.iter().map(|&t| (d(t) - mean).powi(2)).sum::<f64>() / train_ts.len() as f64)
        .sqrt()
        .max(1e-12);
    let scaled = |t: usize| ((d(t) - mean) / std) as f32;
    let batch = |ts: &[usize]| -> Batch {
        let b = ts.len();
        let mut x = vec![0.0f32; w * b];
        for (j, &t) in ts.iter().enumerate() {
            for k in 0..w {
                x[k * b + j] = scaled(t - w + k);
            }
        }
        Batch::dense(w, b, x).with_values(ts.iter().map(|&t| scaled(t)).collect())
    };
    let test_ts: Vec<usize> = (split..n).collect();
    let level = |t: usize, diff: f64| {
        let v = z[t - s] + diff;
        if a.log { v.exp() } else { v }
    };
    let rmse = |forecasts: &[f64]| {
        (test_ts.iter().zip(forecasts).map(|(&t, f)| (f - y[t]).powi(2)).sum::<f64>() / test_ts.len() as f64)
            .sqrt()
    };
    let naive = rmse(&test_ts.iter().map(|&t| level(t, 0.0)).collect::<Vec<_>>());

    let device = Device::from_name(&a.device)?;
    let spec = ModelSpec {
        head: Some(Head { outputs: 1, mode: OutputMode::ManyToOne, loss: Loss::Mse }),
        ..ModelSpec::new(parse_cell(&a.cell)?, InputKind::Dense(1), a.hidden)
    };
    let mut model = Model::new(spec, &device, a.seed)?;
    model.set_optimizer(Optimizer::adam(a.lr), Clip { max_norm: 1.0, value: 0.0 })?;
    outln!("device: {}", device.describe());
    outln!(
        "forecasting {} of {} ({} values) one step ahead: a {} of {} units reads the last {w} {}differences of season {s}; the last {} values are the test",
        a.column,
        a.data.display(),
        n,
        model.spec().cell.name(),
        a.hidden,
        if a.log { "log " } else { "" },
        a.test
    );
    std::fs::create_dir_all(&a.out).map_err(|e| rnn_gpu::Error::Io { path: a.out.clone(), source: e })?;
    let mut rng = Rng::seed_from_u64(a.seed);
    let (mut csv, mut curve) = (String::from("step,train_mse,test_rmse\n"), (Vec::new(), Vec::new()));
    let mut last = f64::NAN;
    let start = std::time::Instant::now();
    for step in 1..=a.steps {
        let ts: Vec<usize> = (0..a.batch).map(|_| train_ts[rng.below(train_ts.len())]).collect();
        model.train_step(&batch(&ts), Start::Fresh)?;
        if step % a.eval_every == 0 || step == a.steps {
            let mse = model.stats()?.loss;
            let pred = model.logits(&batch(&test_ts), Start::Fresh)?;
            let forecasts: Vec<f64> =
                test_ts.iter().zip(&pred).map(|(&t, &p)| level(t, p as f64 * std + mean)).collect();
            let test = rmse(&forecasts);
            last = test;
            csv.push_str(&format!("{step},{mse:.5},{test:.4}\n"));
            write_atomic(&a.out.join("loss.csv"), csv.as_bytes())?;
            curve.0.push((step as f64, mse as f64));
            curve.1.push((step as f64, test / naive));
            rnn_gpu::train::plot::loss_curve(&a.out.join("loss.png"), &curve.0, &curve.1)?;
            outln!(
                "step {step:>6}  training MSE {mse:.4}  test RMSE {test:.2}  {:.0}s",
                start.elapsed().as_secs_f64()
            );
        }
    }
    // The model as trained, not the best of the evaluations: choosing on the test would overfit it.
    outln!(
        "test RMSE over the last {} values: {} {:.2}, seasonal naive {:.2} ({:.0}% of it); curves in {}/loss.csv (the plot's second curve is the test RMSE over the naive one's)",
        a.test,
        model.spec().cell.name(),
        last,
        naive,
        100.0 * last / naive,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
