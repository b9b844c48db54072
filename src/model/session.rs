//! Serving: many independent streams stepped one input at a time, each carrying its own state,
//! any of them reset between steps (Keras' stateful RNNs, PyTorch's `LSTMCell` loop). A step is
//! the model's forward pass over one time step of every stream: its program is recorded once for
//! the session's batch size and replayed at every call.

use super::batch::{Batch, Input};
use super::{Forward, Model, Start};
use crate::error::{Error, Result};

/// The streams of one `Model::session`.
pub struct Session<'m> {
    model: &'m mut Model,
    streams: usize,
    condition: Option<Vec<f32>>,
    begun: bool,
}

impl Model {
    /// A session of `streams` independent streams, each starting from the model's initial state
    /// (zeros, or the learned one); a conditioned model takes each stream's vector, `[streams, C]`.
    /// A bidirectional model cannot step: its reverse direction reads the whole sequence first.
    pub fn session(&mut self, streams: usize, condition: Option<Vec<f32>>) -> Result<Session<'_>> {
        const OP: &str = "session";
        if streams == 0 {
            return Err(Error::invalid(OP, "a session needs at least one stream"));
        }
        if self.spec.bidirectional {
            return Err(Error::invalid(
                OP,
                "a bidirectional model cannot step: its reverse direction needs the whole sequence",
            ));
        }
        match (self.spec.condition, &condition) {
            (Some(c), Some(v)) if v.len() != streams * c => {
                return Err(Error::shape(OP, "condition", &[v.len()], &[streams, c]));
            }
            (Some(c), None) => {
                return Err(Error::invalid(
                    OP,
                    format!("the model's initial state is conditioned: give each stream a vector of {c}"),
                ));
            }
            (None, Some(_)) => {
                return Err(Error::invalid(OP, "the model's initial state is not conditioned"));
            }
            _ => {}
        }
        Ok(Session { model: self, streams, condition, begun: false })
    }
}

impl Session<'_> {
    pub fn streams(&self) -> usize {
        self.streams
    }

    /// One step of every stream: `input` holds one token id per stream (`[streams]`) or one
    /// feature vector per stream (`[streams, I]`). The streams listed in `reset` start afresh from
    /// the model's initial state first. Returns the top layer's outputs `[1, streams, D*H]`, the new
    /// states and, with a head, its outputs `[1, streams, O]`.
    pub fn step(&mut self, input: Input, reset: &[usize]) -> Result<Forward> {
        if let Some(&s) = reset.iter().find(|&&s| s >= self.streams) {
            return Err(Error::range(
                "session step",
                "stream to reset",
                s,
                format!("below {}", self.streams),
            ));
        }
        let mut batch =
            Batch { steps: 1, batch: self.streams, input, lengths: None, targets: None, condition: None };
        let start = if self.begun {
            if !reset.is_empty() {
                self.reset(reset)?;
            }
            Start::Continue
        } else {
            batch.condition = self.condition.clone();
            Start::Fresh
        };
        let out = self.model.forward(&batch, start)?;
        self.begun = true;
        Ok(out)
    }

    /// Sets the listed streams' carried state to the model's initial state.
    fn reset(&mut self, streams: &[usize]) -> Result<()> {
        if self.model.spec.condition.is_some() {
            return Err(Error::invalid(
                "session step",
                "a conditioned model's stream cannot be reset alone: start a new session",
            ));
        }
        let m = &mut *self.model;
        let (spec, layout) = (&m.spec, &m.layout);
        crate::device::with_engine!(&mut m.engine, e => e.reset_streams(spec, layout, self.streams, streams))
    }
}
