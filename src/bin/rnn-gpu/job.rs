//! `--distributed`: the process as one rank of an MPI job started by `mpirun`, or alone.

use rnn_gpu::distributed::{Collective, Single};

/// The job this process belongs to.
pub(crate) enum Job {
    Alone(Single),
    #[cfg(feature = "mpi")]
    Mpi(rnn_gpu::distributed::mpi::MpiWorld),
}

impl Job {
    /// Alone, or (with `distributed`) this process's rank of the MPI job. A rank of several on one
    /// machine takes its share of the cores for the native device, unless `RNN_GPU_THREADS` says
    /// otherwise, and a panic ends the whole job rather than leaving the other ranks waiting.
    pub(crate) fn join(distributed: bool) -> rnn_gpu::Result<Job> {
        if !distributed {
            return Ok(Job::Alone(Single));
        }
        #[cfg(feature = "mpi")]
        {
            let world = rnn_gpu::distributed::mpi::MpiWorld::init()?;
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            if let Err(e) = rnn_gpu::native::threads_or((cores / world.local_size()).max(1)) {
                // The other ranks are on their way into a collective: end the job, not this rank.
                eprintln!("error: rank {} of {}: {e}", world.rank(), world.size());
                world.abort(1);
            }
            let default_hook = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                default_hook(info);
                rnn_gpu::distributed::mpi::abort_job(101);
            }));
            Ok(Job::Mpi(world))
        }
        #[cfg(not(feature = "mpi"))]
        Err(rnn_gpu::Error::Invalid {
            op: "--distributed",
            message: "this rnn-gpu was built without MPI; build it with `cargo build --release \
                      --features mpi` (Debian: apt-get install libopenmpi-dev openmpi-bin libclang-dev) \
                      and start it under mpirun"
                .into(),
        })
    }

    pub(crate) fn comm(&self) -> &dyn Collective {
        match self {
            Job::Alone(s) => s,
            #[cfg(feature = "mpi")]
            Job::Mpi(w) => w,
        }
    }

    pub(crate) fn rank(&self) -> usize {
        self.comm().rank()
    }

    /// This rank among those on its machine (which GPU it takes).
    pub(crate) fn local_rank(&self) -> usize {
        match self {
            Job::Alone(_) => 0,
            #[cfg(feature = "mpi")]
            Job::Mpi(w) => w.local_rank(),
        }
    }

    /// Ends the command with `result`: alone, as usual; in a job, an error ends every rank at once
    /// (the others may be waiting for this one in a collective), named with this rank.
    pub(crate) fn finish(
        &self,
        result: rnn_gpu::Result<std::process::ExitCode>,
    ) -> rnn_gpu::Result<std::process::ExitCode> {
        match (self, result) {
            #[cfg(feature = "mpi")]
            (Job::Mpi(w), Err(e)) => {
                eprintln!("error: rank {} of {}: {e}", w.rank(), w.size());
                w.abort(1)
            }
            (_, result) => result,
        }
    }
}
