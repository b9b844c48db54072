//! Data parallelism: several ranks (processes, or threads) train one model, each on its own share
//! of every batch, and take the same update.
//!
//! After each rank's backward pass the ranks' gradients are summed through a `Collective`,
//! weighted by each rank's share of the loss's terms (its valid tokens or sequences), so that N
//! ranks with B/N sequences each hold the gradient one rank computes for all B; every rank then
//! clips, guards and updates identically. The sum is added in rank order, so every rank gets the
//! same bits and a run repeats exactly.
//!
//! The transports: `Single` (one process, nothing to sum), `ThreadGroup` (ranks as threads of one
//! process, for tests and experiments) and, with the `mpi` feature, `mpi::MpiWorld` (processes
//! started by `mpirun`, on one machine or several). Another collective library plugs in by
//! implementing `Collective`.

#[cfg(feature = "mpi")]
pub mod mpi;

use std::sync::{Arc, Barrier, Mutex};

use crate::error::{Error, Result};

/// What the ranks of a data-parallel job do together.
pub trait Collective {
    /// This rank, from 0.
    fn rank(&self) -> usize;
    /// How many ranks there are.
    fn size(&self) -> usize;
    /// Replaces `data` on every rank by the element-wise sum of every rank's `data` (of the same
    /// length on every rank), added in rank order: `((d0 + d1) + d2) + ...`.
    fn sum(&self, data: &mut [f32]) -> Result<()>;
    /// Every rank's `bytes` (of any length), in rank order.
    fn gather(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>>;
}

/// One process alone: sums and gathers are its own values.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn sum(&self, _data: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn gather(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![bytes.to_vec()])
    }
}

/// Rank `rank`'s share of `n` items among `ranks` ranks: a contiguous run, the first `n % ranks`
/// ranks taking one more. An error when a rank would get none.
pub fn share(n: usize, rank: usize, ranks: usize) -> Result<std::ops::Range<usize>> {
    if rank >= ranks || ranks > n {
        return Err(Error::invalid(
            "distributed",
            format!("rank {rank} of {ranks}: each rank needs at least one of the batch's {n} sequences"),
        ));
    }
    let (base, extra) = (n / ranks, n % ranks);
    let first = rank * base + rank.min(extra);
    Ok(first..first + base + usize::from(rank < extra))
}

/// Whether any rank's `flag` is set (a stop request must end every rank at the same step).
pub fn any(comm: &dyn Collective, flag: bool) -> Result<bool> {
    if comm.size() == 1 {
        return Ok(flag);
    }
    let mut v = [flag as u8 as f32];
    comm.sum(&mut v)?;
    Ok(v[0] > 0.0)
}

/// Checks that every rank runs the same job: `settings` (name, value) pairs, compared with rank
/// 0's. The error names the first setting that differs, the rank and both values.
pub fn agree(comm: &dyn Collective, settings: &[(&str, String)]) -> Result<()> {
    let mine: String = settings.iter().map(|(k, v)| format!("{k}\u{1f}{v}\u{1e}")).collect();
    let all = comm.gather(mine.as_bytes())?;
    let parse = |b: &[u8]| -> Vec<(String, String)> {
        String::from_utf8_lossy(b)
            .split('\u{1e}')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('\u{1f}').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect()
    };
    let root = parse(&all[0]);
    for (rank, bytes) in all.iter().enumerate().skip(1) {
        let other = parse(bytes);
        for (i, (k, v)) in root.iter().enumerate() {
            let theirs = other.get(i).filter(|(k2, _)| k2 == k).map(|(_, v)| v.as_str());
            if theirs != Some(v.as_str()) {
                return Err(Error::invalid(
                    "distributed",
                    format!(
                        "rank {rank} has {k} = {}, rank 0 has {v}; every rank must run the same job",
                        theirs.unwrap_or("(not set)")
                    ),
                ));
            }
        }
        if other.len() != root.len() {
            return Err(Error::invalid(
                "distributed",
                format!(
                    "rank {rank} describes its job with {} settings, rank 0 with {}",
                    other.len(),
                    root.len()
                ),
            ));
        }
    }
    Ok(())
}

/// A digest of `words` (FNV-1a, 64 bits) for `agree`: the weights' bits, a data set's ids.
pub fn digest(words: impl IntoIterator<Item = u32>) -> String {
    let h =
        words.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, w| (h ^ w as u64).wrapping_mul(0x100_0000_01b3));
    format!("{h:016x}")
}

/// Checks that every rank holds the same weights (at `step`): ranks on devices that round
/// differently would drift apart silently.
pub fn agree_on_weights(comm: &dyn Collective, step: usize, params: &[f32]) -> Result<()> {
    agree(
        comm,
        &[(&format!("the weights' digest at step {step}"), digest(params.iter().map(|x| x.to_bits())))],
    )
}

/// What a device is, for `agree`: its kind and, for a GPU, its adapter (devices that round
/// differently must not share a job).
pub fn device_kind(device: &crate::Device) -> String {
    match device {
        crate::Device::Gpu(ctx) => {
            format!("gpu {} ({:?})", ctx.adapter_info().name, ctx.adapter_info().backend)
        }
        other => other.name().to_string(),
    }
}

/// The weighted mean over the ranks of their gradients and losses, each rank's weighted by its
/// `weight` (its share of the loss's terms): `grads` becomes the mean gradients, the same on every
/// rank, and the mean loss is returned. The weights' sum comes first, so that each rank scales its
/// gradients once before the one large sum.
pub fn weighted_mean(comm: &dyn Collective, grads: &mut [f32], loss: f32, weight: f32) -> Result<f32> {
    let valid = weight > 0.0 && weight.is_finite();
    let bad = || Error::invalid("distributed", format!("rank weight {weight} is not a positive count"));
    if comm.size() == 1 {
        return if valid { Ok(loss) } else { Err(bad()) };
    }
    // A bad weight takes part as NaN, so that every rank refuses the step together and none is
    // left waiting in the gradients' sum.
    let w = if valid { weight } else { f32::NAN };
    let mut totals = [w, loss * w];
    comm.sum(&mut totals)?;
    if !valid {
        return Err(bad());
    }
    if !(totals[0] > 0.0 && totals[0].is_finite()) {
        return Err(Error::invalid("distributed", "another rank's weight is not a positive count"));
    }
    let share = weight / totals[0];
    grads.iter_mut().for_each(|g| *g *= share);
    comm.sum(grads)?;
    Ok(totals[1] / totals[0])
}

/// The element-wise sum of `parts` (the ranks' equal-length slices, in rank order) into `out`.
pub(crate) fn sum_in_rank_order<'a>(out: &mut [f32], mut parts: impl Iterator<Item = &'a [f32]>) {
    if let Some(first) = parts.next() {
        out.copy_from_slice(first);
    }
    for p in parts {
        out.iter_mut().zip(p).for_each(|(o, x)| *o += x);
    }
}

/// Ranks as threads of one process: `ThreadGroup::new(n)` gives the n ranks, one per thread.
/// Every rank must take part in each call, as with MPI.
#[derive(Clone)]
pub struct ThreadGroup {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    size: usize,
    barrier: Barrier,
    floats: Mutex<Vec<Vec<f32>>>,
    bytes: Mutex<Vec<Vec<u8>>>,
}

impl ThreadGroup {
    /// The `n` ranks of a new group; hand one to each thread.
    pub fn new(n: usize) -> Result<Vec<ThreadGroup>> {
        if n == 0 {
            return Err(Error::invalid("distributed", "a group needs at least one rank"));
        }
        let shared = Arc::new(Shared {
            size: n,
            barrier: Barrier::new(n),
            floats: Mutex::new(vec![Vec::new(); n]),
            bytes: Mutex::new(vec![Vec::new(); n]),
        });
        Ok((0..n).map(|rank| ThreadGroup { rank, shared: shared.clone() }).collect())
    }

    fn poisoned() -> Error {
        Error::invalid("distributed", "another rank of the thread group panicked")
    }
}

impl Collective for ThreadGroup {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.shared.size
    }
    fn sum(&self, data: &mut [f32]) -> Result<()> {
        let s = &self.shared;
        s.floats.lock().map_err(|_| Self::poisoned())?[self.rank] = data.to_vec();
        s.barrier.wait();
        let mismatch = {
            let parts = s.floats.lock().map_err(|_| Self::poisoned())?;
            match parts.iter().position(|p| p.len() != data.len()) {
                Some(r) => Some(format!(
                    "rank {r} sums {} values, rank {} {}",
                    parts[r].len(),
                    self.rank,
                    data.len()
                )),
                None => {
                    sum_in_rank_order(data, parts.iter().map(|p| p.as_slice()));
                    None
                }
            }
        };
        // Nobody writes the next call's part before every rank has read this one's.
        s.barrier.wait();
        match mismatch {
            Some(message) => Err(Error::invalid("distributed", message)),
            None => Ok(()),
        }
    }

    fn gather(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let s = &self.shared;
        s.bytes.lock().map_err(|_| Self::poisoned())?[self.rank] = bytes.to_vec();
        s.barrier.wait();
        let all = s.bytes.lock().map_err(|_| Self::poisoned())?.clone();
        s.barrier.wait();
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_threads<T: Send + 'static>(n: usize, f: fn(ThreadGroup) -> T) -> Vec<T> {
        let handles: Vec<_> =
            ThreadGroup::new(n).unwrap().into_iter().map(|g| std::thread::spawn(move || f(g))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn thread_group_sums_in_rank_order_on_every_rank() {
        let out = on_threads(3, |g| {
            // (1 + 1e8) - 1e8 is 0 in f32; another order would give 1.
            let mut v = vec![g.rank() as f32 + 1.0, [1.0, 1e8, -1e8][g.rank()]];
            g.sum(&mut v).unwrap();
            v
        });
        let expected = vec![6.0, 0.0];
        assert!(out.iter().all(|v| *v == expected), "{out:?}");
    }

    #[test]
    fn weighted_mean_weighs_each_rank_by_its_share() {
        let out = on_threads(2, |g| {
            let (mut v, loss, w) =
                if g.rank() == 0 { (vec![1.0, 3.0], 2.0, 1.0) } else { (vec![4.0, 0.0], 6.0, 3.0) };
            let mean_loss = weighted_mean(&g, &mut v, loss, w).unwrap();
            (v, mean_loss)
        });
        assert_eq!(out, vec![(vec![3.25, 0.75], 5.0); 2]);
    }

    #[test]
    fn agree_names_the_setting_and_rank_that_differ() {
        let out = on_threads(2, |g| {
            let hidden = if g.rank() == 0 { "32" } else { "64" };
            agree(&g, &[("cell", "lstm".into()), ("hidden", hidden.into())]).map_err(|e| e.to_string())
        });
        for r in out {
            let e = r.unwrap_err();
            assert!(e.contains("rank 1 has hidden = 64, rank 0 has 32"), "{e}");
        }
        let same = on_threads(2, |g| agree(&g, &[("batch", "8".into())]).is_ok());
        assert_eq!(same, vec![true, true]);
    }

    #[test]
    fn any_sees_one_rank_stop() {
        assert_eq!(on_threads(2, |g| any(&g, g.rank() == 1).unwrap()), vec![true, true]);
        assert_eq!(on_threads(2, |g| any(&g, false).unwrap()), vec![false, false]);
    }

    #[test]
    fn bad_weights_and_lengths_are_refused() {
        let e = weighted_mean(&Single, &mut [1.0], 1.0, 0.0).unwrap_err().to_string();
        assert!(e.contains("rank weight 0"), "{e}");
        let out = on_threads(2, |g| {
            let w = if g.rank() == 1 { -1.0 } else { 2.0 };
            weighted_mean(&g, &mut [1.0], 1.0, w).map_err(|e| e.to_string())
        });
        assert!(out[0].as_ref().unwrap_err().contains("another rank's weight"), "{out:?}");
        assert!(out[1].as_ref().unwrap_err().contains("rank weight -1"), "{out:?}");
        let out = on_threads(2, |g| {
            let mut v = vec![0.0; 1 + g.rank()];
            g.sum(&mut v).map_err(|e| e.to_string())
        });
        assert!(out.iter().all(|r| r.as_ref().unwrap_err().contains("sums")), "{out:?}");
    }
}
