//! rnn-gpu in a browser: the page's handle on WebGPU (`Gpu`), the verify cases, and a character
//! model it trains, loads from a model file, samples and saves (`CharModel`). Everything that
//! waits on the GPU is async here: a browser resolves the GPU's promises only when control
//! returns to its event loop, so each call that reads a result back is a JS promise.

use std::path::Path;
use std::sync::Arc;

use rnn_gpu::data::TextCorpus;
use rnn_gpu::gpu::GpuContext;
use rnn_gpu::{Batch, Cell, Clip, Device, Model, ModelSpec, Optimizer, Sampling, Start};
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console)]
    fn error(s: &str);
}

/// A panic's message on the console (the page reports it) rather than "unreachable".
#[wasm_bindgen(start)]
fn start() {
    std::panic::set_hook(Box::new(|info| error(&format!("rnn-gpu panicked: {info}"))));
}

fn js(e: rnn_gpu::Error) -> JsError {
    JsError::new(&e.to_string())
}

/// The browser's WebGPU device.
#[wasm_bindgen]
pub struct Gpu {
    ctx: Arc<GpuContext>,
}

#[wasm_bindgen]
impl Gpu {
    /// Opens WebGPU's adapter and device (with the adapter's own limits). Fails, saying so, when
    /// the browser has no WebGPU.
    pub async fn open() -> Result<Gpu, JsError> {
        Ok(Gpu { ctx: GpuContext::new_async().await.map_err(js)? })
    }

    pub fn describe(&self) -> String {
        self.ctx.describe()
    }

    /// Every kernel against its CPU twin, as `rnn-gpu verify` runs them: a JSON array of
    /// `{kernel, shape, max_err, pass, detail}`.
    pub async fn verify(&self) -> Result<String, JsError> {
        let checks = rnn_gpu::verify::all_checks_async(&self.ctx).await.map_err(js)?;
        let rows: Vec<serde_json::Value> = checks
            .iter()
            .map(|c| {
                serde_json::json!({
                    "kernel": c.kernel,
                    "shape": c.shape,
                    "max_err": if c.max_err.is_finite() { c.max_err } else { f64::MAX },
                    "pass": c.pass(),
                    "detail": c.to_string(),
                })
            })
            .collect();
        Ok(serde_json::Value::Array(rows).to_string())
    }
}

/// A character model on the GPU, its vocabulary, and (when training) its text as streams of
/// chunks for truncated backpropagation through time, as `rnn-gpu train` reads it.
#[wasm_bindgen]
pub struct CharModel {
    model: Model,
    vocab: Vec<char>,
    chunks: Vec<Batch>,
    step: usize,
}

#[wasm_bindgen]
impl CharModel {
    /// A new model of `cell` (rnn, rnn_relu, lstm, gru) to train on `text`, initialised from
    /// `seed`, with Adam at `lr` and the gradient norm clipped at 5, as `rnn-gpu train` does.
    #[allow(clippy::too_many_arguments)]
    pub fn train_new(
        gpu: &Gpu,
        text: &str,
        cell: &str,
        hidden: usize,
        layers: usize,
        seq_len: usize,
        batch: usize,
        lr: f32,
        seed: u64,
    ) -> Result<CharModel, JsError> {
        let corpus = TextCorpus::from_text(text).map_err(js)?;
        let cell = Cell::from_name(cell)
            .ok_or_else(|| JsError::new(&format!("no cell named {cell:?}: rnn, rnn_relu, lstm or gru")))?;
        let spec = ModelSpec::char_model(cell, corpus.vocab.len(), hidden, layers);
        let mut model = Model::new(spec, &Device::Gpu(gpu.ctx.clone()), seed).map_err(js)?;
        model.set_optimizer(Optimizer::adam(lr), Clip { max_norm: 5.0, value: 0.0 }).map_err(js)?;
        let chunks = corpus.stream_batches(seq_len, batch);
        if chunks.is_empty() {
            return Err(JsError::new("the text is too short for one chunk of this batch and length"));
        }
        Ok(CharModel { model, vocab: corpus.vocab, chunks, step: 0 })
    }

    /// A model file written by `rnn-gpu train` (or `save` here), from its bytes.
    pub fn load(gpu: &Gpu, name: &str, bytes: &[u8]) -> Result<CharModel, JsError> {
        let device = Device::Gpu(gpu.ctx.clone());
        let (model, meta) = rnn_gpu::io::load_model_bytes(name, bytes, &device, None).map_err(js)?;
        let vocab = rnn_gpu::io::char_vocab(Path::new(name), &model, &meta).map_err(js)?;
        Ok(CharModel { model, vocab, chunks: Vec::new(), step: 0 })
    }

    /// One training step on the next chunk of the text, and its loss (one submit, then one read
    /// of the step state).
    pub async fn train_step(&mut self) -> Result<f32, JsError> {
        if self.chunks.is_empty() {
            return Err(JsError::new("a loaded model has no text to train on: start one with train_new"));
        }
        let pos = self.step % self.chunks.len();
        let start = if pos == 0 { Start::Fresh } else { Start::Continue };
        self.model.train_step(&self.chunks[pos], start).map_err(js)?;
        self.step += 1;
        Ok(self.model.stats_async().await.map_err(js)?.loss)
    }

    pub fn steps(&self) -> usize {
        self.step
    }

    /// `len` characters after `prime`; temperature 0 picks the most likely character each time.
    pub async fn sample(
        &mut self,
        prime: &str,
        len: usize,
        temperature: f32,
        seed: u64,
    ) -> Result<String, JsError> {
        let corpus = TextCorpus { vocab: self.vocab.clone(), ids: Vec::new() };
        let ids = corpus.encode(prime).map_err(js)?;
        let sampling = Sampling { temperature, top_k: 0, seed };
        let out = self.model.generate_async(&ids, len, sampling).await.map_err(js)?;
        Ok(TextCorpus::decode(&self.vocab, &out))
    }

    /// The model file's bytes, as `rnn-gpu train` writes it (for a download).
    pub async fn save(&mut self) -> Result<Vec<u8>, JsError> {
        let mut meta = rnn_gpu::io::Metadata::new();
        meta.insert("vocab".into(), self.vocab.iter().collect());
        rnn_gpu::io::model_bytes_async(&mut self.model, &meta).await.map_err(js)
    }

    pub fn describe(&self) -> String {
        let s = self.model.spec();
        let proj = if s.proj > 0 { format!(" projected to {}", s.proj) } else { String::new() };
        format!(
            "{}-layer {} of {} units{proj}, vocabulary {}, {} parameters",
            s.layers,
            s.cell.name(),
            s.hidden,
            self.vocab.len(),
            s.param_count()
        )
    }
}
