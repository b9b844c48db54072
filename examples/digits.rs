//! Many-to-one classification: each 8x8 handwritten digit of the bundled UCI data read as 8 steps
//! of 8 pixels by a GRU, classified at the last step. Reports held-out accuracy.
//!
//!     cargo run --release --example digits

use rnn_gpu::rng::Rng;
use rnn_gpu::{
    Batch, Cell, Clip, Device, Head, InputKind, Loss, Model, ModelSpec, Optimizer, OutputMode, Start,
};

fn load() -> rnn_gpu::Result<Vec<(Vec<f32>, u32)>> {
    let path = "data/digits.csv";
    let text =
        std::fs::read_to_string(path).map_err(|e| rnn_gpu::Error::Io { path: path.into(), source: e })?;
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            let v: Vec<f32> =
                line.split(',').map(|x| x.trim().parse::<f32>()).collect::<Result<_, _>>().map_err(|e| {
                    rnn_gpu::Error::File { path: path.into(), message: format!("line {}: {e}", n + 1) }
                })?;
            if v.len() != 65 {
                return Err(rnn_gpu::Error::File {
                    path: path.into(),
                    message: format!("line {} has {} fields, not 65", n + 1, v.len()),
                });
            }
            Ok((v[..64].iter().map(|p| p / 16.0).collect(), v[64] as u32))
        })
        .collect()
}

/// Images as 8 steps of 8 pixels (time-major), with their classes.
fn batch(items: &[&(Vec<f32>, u32)]) -> Batch {
    let b = items.len();
    let mut x = vec![0.0; 8 * b * 8];
    for (j, (img, _)) in items.iter().enumerate() {
        for t in 0..8 {
            x[(t * b + j) * 8..(t * b + j + 1) * 8].copy_from_slice(&img[t * 8..(t + 1) * 8]);
        }
    }
    Batch::dense(8, b, x).with_classes(items.iter().map(|i| i.1).collect())
}

fn main() -> rnn_gpu::Result<()> {
    let mut data = load()?;
    let mut rng = Rng::seed_from_u64(1);
    for i in (1..data.len()).rev() {
        data.swap(i, rng.below(i + 1));
    }
    let (test, train) = data.split_at(data.len() / 5);
    let device = Device::auto();
    println!("device: {}; {} training and {} test digits", device.describe(), train.len(), test.len());
    let spec = ModelSpec {
        head: Some(Head { outputs: 10, mode: OutputMode::ManyToOne, loss: Loss::CrossEntropy }),
        ..ModelSpec::new(Cell::Gru, InputKind::Dense(8), 64)
    };
    let mut model = Model::new(spec, &device, 1)?;
    model.set_optimizer(Optimizer::adam(5e-3), Clip { max_norm: 1.0, value: 0.0 })?;
    for step in 1..=400 {
        let items: Vec<_> = (0..64).map(|_| &train[rng.below(train.len())]).collect();
        model.train_step(&batch(&items), Start::Fresh)?;
        if step % 100 == 0 {
            println!("step {step}: loss {:.4}", model.stats()?.loss);
        }
    }
    let all: Vec<_> = test.iter().collect();
    let logits = model.logits(&batch(&all), Start::Fresh)?;
    let correct = all
        .iter()
        .enumerate()
        .filter(|(i, item)| {
            let row = &logits[i * 10..(i + 1) * 10];
            let pred = row.iter().enumerate().fold(0, |m, (j, &v)| if v > row[m] { j } else { m });
            pred as u32 == item.1
        })
        .count();
    println!("test accuracy: {correct}/{} = {:.1}%", all.len(), 100.0 * correct as f64 / all.len() as f64);
    Ok(())
}
