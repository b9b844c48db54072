//! Forecasting the bundled airline-passenger series (Box & Jenkins, monthly, 1949-1960). The series
//! grows and swings with the seasons; its year-over-year log change is nearly stationary, so an
//! LSTM reads the last 12 months of that change and predicts next month's. Trained on 1949-1958,
//! tested one step ahead on 1959-1960 against the seasonal-naive forecast (the same month last
//! year, which is a year-over-year change of zero), by RMSE in thousands of passengers.
//!
//!     cargo run --release --example airline

use rnn_gpu::rng::Rng;
use rnn_gpu::{
    Batch, Cell, Clip, Device, Head, InputKind, Loss, Model, ModelSpec, Optimizer, OutputMode, Start,
};

const WINDOW: usize = 12;
const TEST_MONTHS: usize = 24;

fn load() -> rnn_gpu::Result<Vec<f64>> {
    let path = "data/airline-passengers.csv";
    let text =
        std::fs::read_to_string(path).map_err(|e| rnn_gpu::Error::Io { path: path.into(), source: e })?;
    text.lines()
        .skip(1)
        .map(|l| {
            l.split(',')
                .nth(1)
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| rnn_gpu::Error::File { path: path.into(), message: format!("bad line {l:?}") })
        })
        .collect()
}

fn main() -> rnn_gpu::Result<()> {
    let y = load()?;
    let logy: Vec<f64> = y.iter().map(|v| v.ln()).collect();
    let n = y.len();
    let split = n - TEST_MONTHS;
    // The year-over-year log change, scaled to about unit size.
    let scale = 10.0;
    let yoy = |t: usize| ((logy[t] - logy[t - 12]) * scale) as f32;
    // Month t is predicted from the changes of the WINDOW months before it.
    let sample = |t: usize| -> (Vec<f32>, f32) { ((t - WINDOW..t).map(yoy).collect(), yoy(t)) };
    let batch = |ts: &[usize]| -> Batch {
        let b = ts.len();
        let mut x = vec![0.0f32; WINDOW * b];
        let mut v = Vec::new();
        for (j, &t) in ts.iter().enumerate() {
            let (w, target) = sample(t);
            for s in 0..WINDOW {
                x[s * b + j] = w[s];
            }
            v.push(target);
        }
        Batch::dense(WINDOW, b, x).with_values(v)
    };
    let train_ts: Vec<usize> = (12 + WINDOW..split).collect();
    let test_ts: Vec<usize> = (split..n).collect();

    let device = Device::auto();
    println!("device: {}", device.describe());
    let spec = ModelSpec {
        head: Some(Head { outputs: 1, mode: OutputMode::ManyToOne, loss: Loss::Mse }),
        ..ModelSpec::new(Cell::Lstm, InputKind::Dense(1), 16)
    };
    let mut model = Model::new(spec, &device, 3)?;
    model.set_optimizer(Optimizer::adam(3e-3), Clip { max_norm: 1.0, value: 0.0 })?;
    let mut rng = Rng::seed_from_u64(2);
    for step in 1..=300 {
        let ts: Vec<usize> = (0..32).map(|_| train_ts[rng.below(train_ts.len())]).collect();
        model.train_step(&batch(&ts), Start::Fresh)?;
        if step % 100 == 0 {
            println!("step {step}: training MSE {:.4}", model.stats()?.loss);
        }
    }
    let pred = model.logits(&batch(&test_ts), Start::Fresh)?;
    let (mut se_model, mut se_naive) = (0.0, 0.0);
    for (i, &t) in test_ts.iter().enumerate() {
        let forecast = y[t - 12] * (pred[i] as f64 / scale).exp();
        se_model += (forecast - y[t]).powi(2);
        se_naive += (y[t - 12] - y[t]).powi(2);
    }
    let rmse = |se: f64| (se / test_ts.len() as f64).sqrt();
    println!(
        "test RMSE 1959-1960, thousands of passengers: LSTM {:.1}, seasonal naive {:.1}",
        rmse(se_model),
        rmse(se_naive)
    );
    Ok(())
}
