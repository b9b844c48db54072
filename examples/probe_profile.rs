use rnn_gpu::rng::Rng;
use rnn_gpu::*;
use std::collections::BTreeMap;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cell = Cell::from_name(&args[1]).unwrap();
    let h: usize = args[2].parse().unwrap();
    let b: usize = args[3].parse().unwrap();
    let t: usize = args[4].parse().unwrap();
    let dev = Device::gpu().unwrap();
    let mut m = Model::new(ModelSpec::char_model(cell, 65, h, 1), &dev, 1).unwrap();
    m.set_optimizer(Optimizer::sgd(0.01, 0.0), Clip::default()).unwrap();
    let mut rng = Rng::seed_from_u64(1);
    let n = t * b;
    let batch = Batch::tokens(t, b, (0..n).map(|_| rng.below(65) as u32).collect())
        .with_classes((0..n).map(|_| rng.below(65) as u32).collect());
    m.train_step_stats(&batch, Start::Fresh).unwrap();
    let prog = m.program(&batch, "train").unwrap();
    let mut totals: BTreeMap<&str, (f64, usize)> = BTreeMap::new();
    let mut best_total = f64::MAX;
    for _ in 0..5 {
        let prof = prog.profile().unwrap();
        let total: f64 = prof.iter().map(|p| p.1).sum();
        if total < best_total {
            best_total = total;
            totals.clear();
            for (name, dt) in prof {
                let e = totals.entry(name).or_default();
                e.0 += dt;
                e.1 += 1;
            }
        }
    }
    let total = best_total;
    let mut v: Vec<_> = totals.into_iter().collect();
    v.sort_by(|a, b| b.1.0.partial_cmp(&a.1.0).unwrap());
    println!("total {:.1} ms over {} dispatches", total * 1e3, prog.dispatch_count());
    for (name, (dt, cnt)) in v {
        println!("{name:>24} {:>8.2} ms  x{cnt}  {:.1}%", dt * 1e3, 100.0 * dt / total);
    }
}
