//! The MPI transport (cargo feature `mpi`): the ranks are the processes `mpirun` starts, on one
//! machine or several, through the system's MPI library (Open MPI or MPICH) and the `mpi` crate.
//!
//! The gradient sum is a reduce-scatter then an all-gather, as a ring all-reduce moves it
//! (2(N-1)/N of the buffer in and out per rank), but with the adding done here, in rank order:
//! `MPI_Alltoall` gives each rank every rank's share of its own slice, which it adds in rank
//! order, and `MPI_Allgather` hands the summed slices back. `MPI_Allreduce` would move as much but
//! adds in an order of the library's choosing, which varies with the rank count and the size.
//!
//! MPI's default error handler ends the whole job on a communication failure, and a rank that
//! dies ends it through `mpirun`; `abort` ends it from a rank that hit an error of its own.

use std::cell::RefCell;

use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::{Collective, sum_in_rank_order};
use crate::error::{Error, Result};

/// This process's place in the MPI job. MPI stays initialized while it lives.
pub struct MpiWorld {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_rank: usize,
    local_size: usize,
    /// The buffers of `sum`, kept between steps.
    scratch: RefCell<(Vec<f32>, Vec<f32>, Vec<f32>)>,
    // Dropped last: finalizes MPI.
    _universe: Universe,
}

impl MpiWorld {
    /// Initializes MPI for this process (once: a second call is an error).
    pub fn init() -> Result<MpiWorld> {
        let universe = mpi::initialize()
            .ok_or_else(|| Error::invalid("distributed", "MPI is already initialized in this process"))?;
        let world = universe.world();
        // The ranks that share this machine's memory: the local rank picks the GPU and the
        // thread share.
        let local = world.split_shared(0);
        Ok(MpiWorld {
            rank: world.rank() as usize,
            size: world.size() as usize,
            local_rank: local.rank() as usize,
            local_size: local.size() as usize,
            world,
            scratch: RefCell::new((Vec::new(), Vec::new(), Vec::new())),
            _universe: universe,
        })
    }

    /// This rank among those on its machine.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// How many ranks run on this machine.
    pub fn local_size(&self) -> usize {
        self.local_size
    }

    /// Ends every rank of the job with exit status `code`: a rank that cannot go on must not
    /// leave the others waiting in a collective.
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

/// Ends every rank of the job from anywhere (a panic hook), as `MpiWorld::abort` does.
pub fn abort_job(code: i32) -> ! {
    SimpleCommunicator::world().abort(code)
}

/// A count MPI takes (a C int).
fn count(n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| {
        Error::invalid("distributed", format!("{n} values is more than one MPI call moves (2^31 - 1)"))
    })
}

impl Collective for MpiWorld {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn sum(&self, data: &mut [f32]) -> Result<()> {
        let n = self.size;
        if n == 1 {
            return Ok(());
        }
        let slice = data.len().div_ceil(n);
        count(slice * n)?;
        let mut guard = self.scratch.borrow_mut();
        let (send, recv, mine) = &mut *guard;
        send.clear();
        send.extend_from_slice(data);
        send.resize(slice * n, 0.0);
        recv.resize(slice * n, 0.0);
        mine.resize(slice, 0.0);
        // recv: rank r's part of this rank's slice, for r in order.
        self.world.all_to_all_into(&send[..], &mut recv[..]);
        sum_in_rank_order(mine, recv.chunks(slice));
        self.world.all_gather_into(&mine[..], &mut send[..]);
        data.copy_from_slice(&send[..data.len()]);
        Ok(())
    }

    fn gather(&self, bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut lens = vec![0i32; self.size];
        self.world.all_gather_into(&count(bytes.len())?, &mut lens[..]);
        let mut displs = Vec::with_capacity(self.size);
        let mut total = 0usize;
        for &l in &lens {
            displs.push(count(total)?);
            total += l as usize;
        }
        let mut all = vec![0u8; total];
        {
            let mut part = PartitionMut::new(&mut all[..], &lens[..], &displs[..]);
            self.world.all_gather_varcount_into(bytes, &mut part);
        }
        Ok(lens.iter().zip(&displs).map(|(&l, &d)| all[d as usize..][..l as usize].to_vec()).collect())
    }
}
