//! A character language model through the library API: train a 2-layer LSTM on the bundled
//! Shakespeare with truncated BPTT (the state carried from chunk to chunk), then sample.
//!
//!     cargo run --release --example char_rnn            # 300 steps, about 6 minutes on lavapipe
//!     cargo run --release --example char_rnn -- 50      # a quick look

use rnn_gpu::data::TextCorpus;
use rnn_gpu::{Cell, Clip, Device, Model, ModelSpec, Optimizer, Sampling, Start};

fn main() -> rnn_gpu::Result<()> {
    let steps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(300);
    let corpus = TextCorpus::load("data/tinyshakespeare.txt".as_ref())?;
    let (train, valid) = corpus.split(0.1);
    let device = Device::auto();
    println!("device: {}", device.describe());

    let spec = ModelSpec::char_model(Cell::Lstm, corpus.vocab.len(), 128, 2);
    let mut model = Model::new(spec, &device, 1)?;
    model.set_optimizer(Optimizer::adam(3e-3), Clip { max_norm: 5.0, value: 0.0 })?;

    // 32 streams through the text, 64 characters at a time.
    let chunks = train.stream_batches(64, 32);
    let valid_chunks: Vec<_> = valid.stream_batches(64, 32).into_iter().take(8).collect();
    for step in 0..steps {
        let start = if step % chunks.len() == 0 { Start::Fresh } else { Start::Continue };
        model.train_step(&chunks[step % chunks.len()], start)?;
        if (step + 1) % 50 == 0 {
            let train_loss = model.stats()?.loss;
            let valid_loss = rnn_gpu::train::text::validation_loss(&mut model, &valid_chunks)?;
            println!("step {:>4}: train {train_loss:.3}, validation {valid_loss:.3} nats/char", step + 1);
        }
    }
    // The validation pass reset the streams' state; sampling starts afresh anyway.
    let prime = corpus.encode("ROMEO:")?;
    let ids = model.generate(&prime, 300, Sampling { temperature: 0.8, top_k: 0, seed: 1 })?;
    println!("ROMEO:{}", TextCorpus::decode(&corpus.vocab, &ids));
    Ok(())
}
