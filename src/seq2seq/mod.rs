//! Sequence to sequence: an encoder and a decoder, each a stack of the engine's cells, for outputs
//! of another length than the inputs (translation, normalisation).
//!
//! Parameters (a PyTorch module tree of the same shape would name them so):
//! `encoder.embedding.weight [Vs, E]`, `encoder.rnn.*`, `decoder.embedding.weight [Vt, E]`,
//! `decoder.rnn.*`, `bridge.weight [Hd, D*He]`, `bridge.bias` (and `bridge_c.*` for an LSTM) when
//! the encoder's final state and the decoder's state differ in size, `attention.w_a [Hd, D*He]`
//! and `attention.w_c [Hd, D*He + Hd]` with attention, and `decoder.head.weight [Vt, Hd]`,
//! `decoder.head.bias [Vt]`. Decoder layer l starts from encoder layer min(l, Le - 1), its
//! directions side by side.
//!
//! Training is teacher-forced: the decoder reads BOS then the target, and predicts the target then
//! EOS; one training step is one program, one submit. Inference decodes greedily or by beam search,
//! the decoder's state kept on the device between steps.

mod decode;
mod exec;
pub mod graph;
mod spec;
pub mod train;

use crate::backend::Backend;
use crate::device::{Device, Engine, Plan, check_host_memory, with_engine};
use crate::error::{Error, Result, check_flat_params};
use crate::exec::{StepStats, Training};
use crate::io::{self, Metadata};
use crate::model::params::ParamLayout;
use crate::rng::Rng;
use crate::update::{Clip, Optimizer};
use crate::wait::block_on;
pub use exec::S2sExec;
use graph::S2sWs;
pub use spec::{MAX_BEAM, MAX_DECODE, Seq2SeqSpec, check_decoding};

/// An encoder-decoder keeps an `S2sWs` per batch shape.
pub(crate) struct S2sPlan;

impl Plan for S2sPlan {
    type Ws<B: Backend> = S2sWs<B>;
}

/// An encoder-decoder model resident on its device.
pub struct Seq2Seq {
    spec: Seq2SeqSpec,
    layout: ParamLayout,
    engine: Engine<S2sPlan>,
    training: Training,
}

impl Seq2Seq {
    pub fn new(spec: Seq2SeqSpec, device: &Device, seed: u64) -> Result<Seq2Seq> {
        spec.validate()?;
        let layout = spec.layout();
        check_host_memory("the encoder-decoder", layout.count() as u64, device)?;
        let params = layout.init(seed);
        Self::with_flat_params(spec, device, &params, seed)
    }

    pub fn with_flat_params(
        spec: Seq2SeqSpec,
        device: &Device,
        params: &[f32],
        seed: u64,
    ) -> Result<Seq2Seq> {
        spec.validate()?;
        let layout = spec.layout();
        check_flat_params("Seq2Seq", params, layout.total())?;
        Ok(Seq2Seq {
            engine: Engine::new(device, &layout, params)?,
            spec,
            layout,
            training: Training::new(Optimizer::adam(1e-3), Rng::seed_from_u64(seed ^ 0x5e95_e95e)),
        })
    }

    pub fn spec(&self) -> &Seq2SeqSpec {
        &self.spec
    }

    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// Sets the update rule and clipping used by `train_step` (as `Model::set_optimizer`).
    pub fn set_optimizer(&mut self, optimizer: Optimizer, clip: Clip) -> Result<()> {
        let (layout, t) = (&self.layout, &mut self.training);
        with_engine!(&mut self.engine, e => t.set(e, layout, optimizer, clip))
    }

    /// One teacher-forced training step on (source, target) id pairs; one submit. Call `stats`
    /// for the loss.
    pub fn train_step(&mut self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<()> {
        let seed = self.training.rng.next_u32();
        let (spec, layout, opt, clip) =
            (&self.spec, &self.layout, self.training.optimizer, self.training.clip);
        with_engine!(&mut self.engine, e => e.train_step(spec, layout, pairs, &opt, clip, seed, true))?;
        Ok(())
    }

    /// One data-parallel training step on this rank's share of the pairs: its gradients and loss
    /// averaged over the ranks of `comm` (each weighted by its target tokens), then the same
    /// clipping, guard and update on every rank, as `Model::train_step_distributed` does.
    pub fn train_step_distributed(
        &mut self,
        pairs: &[(Vec<u32>, Vec<u32>)],
        comm: &dyn crate::distributed::Collective,
    ) -> Result<()> {
        if comm.size() == 1 {
            return self.train_step(pairs);
        }
        let seed = self.training.rng.next_u32() ^ crate::model::rank_salt(comm.rank());
        let (spec, layout, opt, clip) =
            (&self.spec, &self.layout, self.training.optimizer, self.training.clip);
        with_engine!(&mut self.engine, e => {
            let tokens = e.train_step(spec, layout, pairs, &opt, clip, seed, false)?;
            e.reduce_gradients(comm, tokens as f32)?;
            e.apply_update(layout, &opt, clip)
        })
    }

    /// The step state after the last training step; an error when a step was refused.
    pub fn stats(&mut self) -> Result<StepStats> {
        block_on("Seq2Seq::stats", self.stats_async())
    }

    pub async fn stats_async(&mut self) -> Result<StepStats> {
        let s = with_engine!(&mut self.engine, e => e.stats_async().await)?;
        self.training.checked(s)
    }

    /// The mean cross-entropy per target token (EOS included) on `pairs`, without updating.
    pub fn evaluate(&mut self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<f32> {
        block_on("Seq2Seq::evaluate", self.evaluate_async(pairs))
    }

    pub async fn evaluate_async(&mut self, pairs: &[(Vec<u32>, Vec<u32>)]) -> Result<f32> {
        let (spec, layout) = (&self.spec, &self.layout);
        with_engine!(&mut self.engine, e => {
            e.evaluate(spec, layout, pairs, false)?;
            Ok(e.stats_async().await?.loss)
        })
    }

    /// The loss and the gradient of every parameter, by name.
    pub fn loss_gradients(
        &mut self,
        pairs: &[(Vec<u32>, Vec<u32>)],
    ) -> Result<(f32, Vec<(String, Vec<f32>)>)> {
        let (spec, layout) = (&self.spec, &self.layout);
        with_engine!(&mut self.engine, e => {
            e.evaluate(spec, layout, pairs, true)?;
            let loss = e.stats()?.loss;
            let g = e.net.grads.clone();
            let flat = e.read(&g)?;
            Ok((loss, layout.entries().iter().map(|p| (p.name.clone(), flat[p.range()].to_vec())).collect()))
        })
    }

    pub fn flat_params(&mut self) -> Result<Vec<f32>> {
        block_on("Seq2Seq::flat_params", self.flat_params_async())
    }

    pub async fn flat_params_async(&mut self) -> Result<Vec<f32>> {
        with_engine!(&mut self.engine, e => {
            let p = e.net.params.clone();
            e.read_async(&p).await
        })
    }

    fn param_tensors(&mut self) -> Result<Vec<(String, Vec<usize>, io::TensorData)>> {
        let flat = self.flat_params()?;
        Ok(self
            .layout
            .entries()
            .iter()
            .map(|e| (e.name.clone(), e.shape.clone(), io::TensorData::F32(flat[e.range()].to_vec())))
            .collect())
    }

    /// Saves the model with its description and `extra` metadata (vocabularies).
    pub fn save(&mut self, path: &std::path::Path, extra: &Metadata) -> Result<()> {
        let tensors = self.param_tensors()?;
        let mut meta = self.spec.metadata();
        meta.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        io::write_tensors(path, &tensors, &meta)
    }

    /// Loads a model saved by `save` (or a checkpoint, whose training state it leaves).
    pub fn load(path: &std::path::Path, device: &Device) -> Result<(Seq2Seq, Metadata)> {
        let (model, meta, _) = Self::read(path, device)?;
        Ok((model, meta))
    }

    fn read(
        path: &std::path::Path,
        device: &Device,
    ) -> Result<(Seq2Seq, Metadata, std::collections::BTreeMap<String, (Vec<usize>, io::TensorData)>)> {
        let file = io::read_tensors(path)?;
        let spec = Seq2SeqSpec::from_metadata(path, &file.metadata)?;
        let layout = spec.layout();
        let checkpoint = file.metadata.contains_key("optimizer.name");
        let extra = |name: &str| checkpoint && io::is_checkpoint_tensor(name);
        let params = io::flat_params(path, &layout, &file.tensors, "rnn.", &extra)?;
        let model = Seq2Seq::with_flat_params(spec, device, &params, 0)?;
        let rest = file.tensors.into_iter().filter(|(k, _)| extra(k)).collect();
        Ok((model, file.metadata, rest))
    }

    /// The optimizer, its state, the step state and the random generator (see `Model`).
    pub fn training_state(&mut self) -> Result<crate::train::TrainingState> {
        let t = &self.training;
        block_on("Seq2Seq::training_state", async { with_engine!(&mut self.engine, e => t.state(e).await) })
    }

    pub fn set_training_state(&mut self, state: &crate::train::TrainingState) -> Result<()> {
        let (layout, t) = (&self.layout, &mut self.training);
        with_engine!(&mut self.engine, e => t.restore(e, layout, state))
    }

    /// Saves the model with its training state and `extra` metadata, to resume exactly.
    pub fn save_checkpoint(&mut self, path: &std::path::Path, extra: &Metadata) -> Result<()> {
        let mut tensors = self.param_tensors()?;
        let mut meta = self.spec.metadata();
        let state = self.training_state()?;
        tensors.extend(io::training_tensors(&state, self.layout.total(), &mut meta));
        meta.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        io::write_tensors(path, &tensors, &meta)
    }

    /// Loads a checkpoint saved by `save_checkpoint`, ready to continue training.
    pub fn load_checkpoint(path: &std::path::Path, device: &Device) -> Result<(Seq2Seq, Metadata)> {
        let (mut model, meta, extra) = Self::read(path, device)?;
        let state = io::training_state(path, &meta, &extra, model.layout.total())?;
        model.set_training_state(&state).map_err(|e| Error::file(path, e.to_string()))?;
        Ok((model, meta))
    }
}
