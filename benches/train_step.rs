//! The standard cases of DESIGN.md on every device in the same run (the GPU when there is an
//! adapter, the native CPU device, and the reference with `RNN_GPU_BENCH_REFERENCE=1`): one
//! training step (forward + BPTT + SGD update) and the forward pass alone. Criterion's "elem/s"
//! are tokens (T*B per step) per second. `RNN_GPU_BENCH_QUICK=1` shrinks the cases for a smoke
//! run.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rnn_gpu::rng::Rng;
use rnn_gpu::{Batch, Cell, Clip, Device, Model, ModelSpec, Optimizer, Start};

const VOCAB: usize = 65;

fn cases() -> Vec<(Cell, usize, usize, usize)> {
    if std::env::var("RNN_GPU_BENCH_QUICK").as_deref() == Ok("1") {
        return vec![(Cell::Lstm, 16, 4, 8)];
    }
    vec![
        (Cell::Rnn { relu: false }, 256, 32, 64),
        (Cell::Lstm, 256, 32, 64),
        (Cell::Gru, 256, 32, 64),
        (Cell::Lstm, 512, 64, 100),
    ]
}

fn batch(rng: &mut Rng, steps: usize, b: usize) -> Batch {
    let n = steps * b;
    Batch::tokens(steps, b, (0..n).map(|_| rng.below(VOCAB) as u32).collect())
        .with_classes((0..n).map(|_| rng.below(VOCAB) as u32).collect())
}

fn bench(c: &mut Criterion) {
    let mut devices = Vec::new();
    match Device::gpu() {
        Ok(gpu) => devices.push(gpu),
        Err(e) => eprintln!("no GPU rows: {e}"),
    }
    devices.push(Device::Cpu);
    if std::env::var("RNN_GPU_BENCH_REFERENCE").as_deref() == Ok("1") {
        devices.push(Device::Reference);
    }
    for d in &devices {
        eprintln!("{}: {}", d.name(), d.describe());
    }
    for (cell, h, b, t) in cases() {
        let name = format!("{}_H{h}_B{b}_T{t}", cell.name());
        let mut group = c.benchmark_group(format!("train_step/{name}"));
        group.sample_size(10);
        group.throughput(Throughput::Elements((t * b) as u64));
        let mut rng = Rng::seed_from_u64(1);
        let data = batch(&mut rng, t, b);
        for device in &devices {
            let dev_name = device.name();
            let mut m = Model::new(ModelSpec::char_model(cell, VOCAB, h, 1), device, 1).unwrap();
            m.set_optimizer(Optimizer::sgd(0.01, 0.0), Clip::default()).unwrap();
            group.bench_function(BenchmarkId::new("train", dev_name), |bench| {
                bench.iter(|| m.train_step_stats(&data, Start::Fresh).unwrap())
            });
            group.bench_function(BenchmarkId::new("forward", dev_name), |bench| {
                bench.iter(|| {
                    m.run(&data, Start::Fresh).unwrap();
                    m.sync().unwrap()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
