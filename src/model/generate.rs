//! One-to-many: generating a sequence token by token from a prime, the state kept on the device
//! between steps.

use super::batch::Batch;
use super::spec::OutputMode;
use super::{Model, Start};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::wait::block_on;

/// How the next token is drawn from the head's logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; 0 picks the most likely token (greedy).
    pub temperature: f32,
    /// Draw only among the k most likely tokens (0: all).
    pub top_k: usize,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling { temperature: 1.0, top_k: 0, seed: 0 }
    }
}

/// Draws a token from `logits` (one row).
pub fn sample(logits: &[f32], s: &Sampling, rng: &mut Rng) -> usize {
    let argmax =
        || logits.iter().enumerate().fold(0, |best, (i, &v)| if v > logits[best] { i } else { best });
    if s.temperature <= 0.0 {
        return argmax();
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    if s.top_k > 0 && s.top_k < logits.len() {
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        order.truncate(s.top_k);
    }
    let max = order.iter().map(|&i| logits[i]).fold(f32::NEG_INFINITY, f32::max);
    let weights: Vec<f64> =
        order.iter().map(|&i| (((logits[i] - max) / s.temperature) as f64).exp()).collect();
    let total: f64 = weights.iter().sum();
    let mut u = rng.uniform() * total;
    for (k, w) in weights.iter().enumerate() {
        u -= w;
        if u <= 0.0 {
            return order[k];
        }
    }
    order[order.len() - 1]
}

/// The most tokens one `generate` call draws.
pub const MAX_GENERATE: usize = 1 << 24;

impl Model {
    /// Feeds `prime` (token ids), then draws `len` tokens one at a time, each fed back as the next
    /// input. Needs token input and a many-to-many head over the same vocabulary. Reproducible
    /// from `sampling.seed`. A model whose initial state is conditioned generates with
    /// `generate_conditioned`.
    pub fn generate(&mut self, prime: &[u32], len: usize, sampling: Sampling) -> Result<Vec<u32>> {
        block_on("Model::generate", self.generate_from(None, prime, len, sampling))
    }

    /// As [`Model::generate`], awaited (in a browser, on a GPU, the way to generate).
    pub async fn generate_async(
        &mut self,
        prime: &[u32],
        len: usize,
        sampling: Sampling,
    ) -> Result<Vec<u32>> {
        self.generate_from(None, prime, len, sampling).await
    }

    /// `generate` from the initial state a conditioned model makes of `condition` (its vector of
    /// the condition size).
    pub fn generate_conditioned(
        &mut self,
        condition: &[f32],
        prime: &[u32],
        len: usize,
        sampling: Sampling,
    ) -> Result<Vec<u32>> {
        if self.spec().condition.is_none() {
            return Err(Error::invalid(
                "generate_conditioned",
                "the model's initial state is not conditioned",
            ));
        }
        block_on("Model::generate_conditioned", self.generate_from(Some(condition), prime, len, sampling))
    }

    async fn generate_from(
        &mut self,
        condition: Option<&[f32]>,
        prime: &[u32],
        len: usize,
        sampling: Sampling,
    ) -> Result<Vec<u32>> {
        let vocab = match (self.spec().input, self.spec().head) {
            (input, Some(h)) if h.mode == OutputMode::ManyToMany && input.vocab() == Some(h.outputs) => {
                h.outputs
            }
            _ => {
                return Err(Error::invalid(
                    "generate",
                    "generation needs token input and a many-to-many head over the same vocabulary",
                ));
            }
        };
        if prime.is_empty() {
            return Err(Error::invalid("generate", "the prime must hold at least one token"));
        }
        if len > MAX_GENERATE {
            return Err(Error::range("generate", "length", len, format!("at most {MAX_GENERATE} tokens")));
        }
        if !(sampling.temperature >= 0.0 && sampling.temperature.is_finite()) {
            return Err(Error::range(
                "generate",
                "temperature",
                sampling.temperature,
                "a finite number >= 0",
            ));
        }
        let mut rng = Rng::seed_from_u64(sampling.seed);
        let mut first = Batch::tokens(prime.len(), 1, prime.to_vec());
        if let Some(c) = condition {
            first = first.with_condition(c.to_vec());
        }
        let logits = self.logits_async(&first, Start::Fresh).await?;
        let mut next = sample(&logits[(prime.len() - 1) * vocab..], &sampling, &mut rng) as u32;
        let mut out = Vec::with_capacity(len);
        for i in 0..len {
            out.push(next);
            if i + 1 == len {
                break;
            }
            let logits = self.logits_async(&Batch::tokens(1, 1, vec![next]), Start::Continue).await?;
            next = sample(&logits, &sampling, &mut rng) as u32;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The probabilities `sample` must draw from: a softmax at `temperature` over the `k` largest.
    fn expected(logits: &[f32], k: usize, temperature: f64) -> Vec<f64> {
        let mut sorted = logits.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let cut = sorted[k - 1];
        let w: Vec<f64> =
            logits.iter().map(|&l| if l >= cut { (l as f64 / temperature).exp() } else { 0.0 }).collect();
        let total: f64 = w.iter().sum();
        w.iter().map(|x| x / total).collect()
    }

    #[test]
    fn top_k_draws_only_the_k_largest_with_softmax_frequencies() {
        let logits = [0.0f32, 2.0, -1.0, 1.0, 0.5, -3.0];
        let draws = 40_000;
        for (k, temperature) in [(3, 0.7f32), (2, 1.0), (6, 1.5), (1, 1.0)] {
            let s = Sampling { temperature, top_k: k, seed: 11 };
            let mut rng = Rng::seed_from_u64(s.seed);
            let mut counts = [0usize; 6];
            for _ in 0..draws {
                counts[sample(&logits, &s, &mut rng)] += 1;
            }
            let want = expected(&logits, k, temperature as f64);
            for (t, (&c, &p)) in counts.iter().zip(&want).enumerate() {
                if p == 0.0 {
                    assert_eq!(c, 0, "token {t} is outside the top {k} but was drawn {c} times");
                    continue;
                }
                // Four binomial standard deviations: a false alarm about once in 15,000 checks.
                let freq = c as f64 / draws as f64;
                let tol = 4.0 * (p * (1.0 - p) / draws as f64).sqrt() + 1e-9;
                assert!(
                    (freq - p).abs() <= tol,
                    "top_k {k}, temperature {temperature}: token {t} drawn {freq:.4} of the time, softmax says {p:.4} (tolerance {tol:.4})"
                );
            }
        }
    }

    #[test]
    fn temperature_zero_is_the_argmax_and_top_k_zero_is_every_token() {
        let logits = [0.3f32, -1.0, 0.9, 0.1];
        let mut rng = Rng::seed_from_u64(1);
        let greedy = Sampling { temperature: 0.0, top_k: 0, seed: 1 };
        assert!((0..100).all(|_| sample(&logits, &greedy, &mut rng) == 2));
        let all = Sampling { temperature: 1.0, top_k: 0, seed: 1 };
        let mut seen = [false; 4];
        for _ in 0..2000 {
            seen[sample(&logits, &all, &mut rng)] = true;
        }
        assert_eq!(seen, [true; 4]);
    }
}
