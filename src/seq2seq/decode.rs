//! Decoding: greedy, and beam search with length-normalised scores; the decoder's state stays on
//! the device between steps, reordered by the beams' parents.

use super::{Seq2Seq, check_decoding};
use crate::device::with_engine;
use crate::error::Result;
use crate::wait::block_on;

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + row.iter().map(|&v| (v - max).exp()).sum::<f32>().ln();
    row.iter().map(|&v| v - lse).collect()
}

impl Seq2Seq {
    /// Greedy decoding: the most likely token at each step, until EOS or `max_len` tokens (EOS
    /// not included in the result).
    pub fn greedy(&mut self, sources: &[Vec<u32>], max_len: usize) -> Result<Vec<Vec<u32>>> {
        block_on("Seq2Seq::greedy", self.greedy_async(sources, max_len))
    }

    pub async fn greedy_async(&mut self, sources: &[Vec<u32>], max_len: usize) -> Result<Vec<Vec<u32>>> {
        check_decoding(1, max_len)?;
        let (spec, layout) = (&self.spec, &self.layout);
        let v = spec.tgt_vocab;
        with_engine!(&mut self.engine, e => {
            let steps = e.encode(spec, layout, sources)?;
            let b = sources.len();
            let mut out = vec![Vec::new(); b];
            let mut done = vec![false; b];
            let mut tokens = vec![spec.bos; b];
            for _ in 0..max_len {
                let logits = e.step(spec, layout, steps, &tokens).await?;
                for i in 0..b {
                    let row = &logits[i * v..(i + 1) * v];
                    let best = row.iter().enumerate().fold(0, |m, (j, &x)| if x > row[m] { j } else { m }) as u32;
                    tokens[i] = best;
                    if !done[i] {
                        if best == spec.eos { done[i] = true } else { out[i].push(best) }
                    }
                }
                if done.iter().all(|&d| d) {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// Beam search of `width` hypotheses per source, scored by log-probability divided by length
    /// (EOS counted); stops when `width` hypotheses have ended or at `max_len`. Width 1 is greedy.
    pub fn beam(&mut self, sources: &[Vec<u32>], width: usize, max_len: usize) -> Result<Vec<Vec<u32>>> {
        block_on("Seq2Seq::beam", self.beam_async(sources, width, max_len))
    }

    pub async fn beam_async(
        &mut self,
        sources: &[Vec<u32>],
        width: usize,
        max_len: usize,
    ) -> Result<Vec<Vec<u32>>> {
        check_decoding(width, max_len)?;
        let (spec, layout) = (&self.spec, &self.layout);
        let (v, k, b) = (spec.tgt_vocab, width, sources.len());
        let rows = b * k;
        let layers = spec.dec_layers;
        let replicated: Vec<Vec<u32>> =
            sources.iter().flat_map(|s| std::iter::repeat_n(s.clone(), k)).collect();
        with_engine!(&mut self.engine, e => {
            let steps = e.encode(spec, layout, &replicated)?;
            // Live hypotheses per source: (tokens, log-probability); at first one per source.
            let mut live: Vec<Vec<(Vec<u32>, f32)>> = vec![vec![(Vec::new(), 0.0)]; b];
            let mut finished: Vec<Vec<(Vec<u32>, f32)>> = vec![Vec::new(); b];
            let mut tokens = vec![spec.bos; rows];
            for t in 0..max_len {
                // At the last step a live hypothesis can no longer end, so every ending counts.
                let last = t + 1 == max_len;
                let logits = e.step(spec, layout, steps, &tokens).await?;
                let mut parents = vec![0u32; rows];
                for s in 0..b {
                    if finished[s].len() >= k || live[s].is_empty() {
                        for i in 0..k {
                            parents[s * k + i] = (s * k + i) as u32;
                        }
                        continue;
                    }
                    let mut cands: Vec<(f32, usize, u32)> = Vec::new();
                    for (i, (_, lp)) in live[s].iter().enumerate() {
                        let row = log_softmax(&logits[(s * k + i) * v..(s * k + i + 1) * v]);
                        let mut best: Vec<(f32, u32)> = row.iter().enumerate().map(|(t, &x)| (lp + x, t as u32)).collect();
                        best.sort_by(|a, c| c.0.total_cmp(&a.0));
                        cands.extend(best.into_iter().take(2 * k).map(|(sc, t)| (sc, i, t)));
                    }
                    cands.sort_by(|a, c| c.0.total_cmp(&a.0));
                    let mut next = Vec::new();
                    for (score, parent, tok) in cands {
                        let mut seq = live[s][parent].0.clone();
                        if tok == spec.eos {
                            if finished[s].len() < k {
                                finished[s].push((seq.clone(), score / (seq.len() + 1) as f32));
                            }
                        } else if next.len() < k {
                            seq.push(tok);
                            parents[s * k + next.len()] = (s * k + parent) as u32;
                            tokens[s * k + next.len()] = tok;
                            next.push((seq, score));
                        }
                        if next.len() == k && !last {
                            break;
                        }
                    }
                    live[s] = next;
                }
                if (0..b).all(|s| finished[s].len() >= k || live[s].is_empty()) {
                    break;
                }
                // The state rows [L, B*k, H] follow their hypotheses.
                let map: Vec<u32> = (0..layers * rows).map(|r| ((r / rows) * rows) as u32 + parents[r % rows]).collect();
                e.reorder(spec, layout, steps, rows, &map)?;
            }
            Ok((0..b)
                .map(|s| {
                    let pool: Vec<(Vec<u32>, f32)> = if finished[s].is_empty() {
                        live[s].iter().map(|(t, lp)| (t.clone(), lp / (t.len() + 1) as f32)).collect()
                    } else {
                        finished[s].clone()
                    };
                    pool.into_iter().max_by(|a, c| a.1.total_cmp(&c.1)).map(|p| p.0).unwrap_or_default()
                })
                .collect())
        })
    }
}
