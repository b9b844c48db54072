use rnn_gpu::data::TextCorpus;
use rnn_gpu::rng::Rng;
use rnn_gpu::*;
use std::time::Instant;
fn main() {
    let text = std::fs::read_to_string("data/tinyshakespeare.txt").unwrap();
    let corpus = TextCorpus::from_text(&text[..200_000]).unwrap();
    let args: Vec<String> = std::env::args().collect();
    let dev =
        if args.get(1).map(|s| s.as_str()) == Some("cpu") { Device::Cpu } else { Device::gpu().unwrap() };
    let h: usize = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(128);
    let steps_n: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(100);
    let cell = Cell::from_name(args.get(4).map(|s| s.as_str()).unwrap_or("lstm")).unwrap();
    let spec = ModelSpec::char_model(cell, corpus.vocab.len(), h, 1);
    let mut m = Model::new(spec, &dev, 1).unwrap();
    m.set_optimizer(Optimizer::adam(3e-3), Clip { max_norm: 5.0, value: 0.0 }).unwrap();
    let mut rng = Rng::seed_from_u64(1);
    let t0 = Instant::now();
    for i in 0..steps_n {
        let b = corpus.random_batch(&mut rng, 32, 16).unwrap();
        m.train_step(&b, Start::Fresh).unwrap();
        if i % 50 == 49 || i == steps_n - 1 {
            let s = m.stats().unwrap();
            println!(
                "step {} loss {:.3} {:.1} ms/step",
                i + 1,
                s.loss,
                t0.elapsed().as_secs_f64() * 1e3 / (i + 1) as f64
            );
        }
    }
}
