//! Data-parallel throughput: the training step of a standard case (`rnn-gpu bench`'s cases, by
//! default LSTM H=256 B=32 T=64) with the batch split over the ranks of an MPI job, in tokens
//! per second of the whole job. Run it at 1 rank and at N and compare:
//!
//! ```sh
//! cargo build --release --features mpi --example mpi_bench
//! RNN_GPU_THREADS=1 mpirun -np 1 target/release/examples/mpi_bench
//! RNN_GPU_THREADS=1 mpirun -np 2 --bind-to none target/release/examples/mpi_bench
//! ```
//! Arguments: `[cell hidden batch steps [timed-steps]]`, e.g. `gru 256 32 64 40`.

use std::time::Instant;

use rnn_gpu::bench::Case;
use rnn_gpu::distributed::Collective;
use rnn_gpu::distributed::mpi::MpiWorld;
use rnn_gpu::{Cell, Clip, Device, Model, Optimizer, OutputMode, Start};

fn main() -> rnn_gpu::Result<()> {
    let world = MpiWorld::init()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, default: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let cell = args.first().and_then(|s| Cell::from_name(s)).unwrap_or(Cell::Lstm);
    let case = Case { cell, hidden: num(1, 256), proj: 0, batch: num(2, 32), steps: num(3, 64) };
    let timed = num(4, 30);
    let (t, b) = (case.steps, case.batch);
    let whole = case.data();
    let mine = whole.shard(OutputMode::ManyToMany, world.rank(), world.size())?;
    let mut model = Model::new(case.spec(), &Device::Cpu, 1)?;
    model.set_optimizer(Optimizer::sgd(1e-3, 0.0), Clip { max_norm: 5.0, value: 0.0 })?;
    let mut time = |steps: usize| -> rnn_gpu::Result<f64> {
        let start = Instant::now();
        for _ in 0..steps {
            model.train_step_distributed(&mine, Start::Fresh, &world)?;
        }
        model.stats()?;
        // The job's time is its slowest rank's.
        let mut each = vec![0.0; world.size()];
        each[world.rank()] = start.elapsed().as_secs_f32();
        world.sum(&mut each)?;
        Ok(each.iter().copied().fold(0.0, f32::max) as f64)
    };
    time(3)?; // warm-up: workspaces, the pool
    let secs = time(timed)?;
    if world.rank() == 0 {
        println!(
            "{} ranks, {}: {:.1} ms per step, {:.0} tokens/s",
            world.size(),
            case.name(),
            1e3 * secs / timed as f64,
            (timed * t * b) as f64 / secs
        );
    }
    Ok(())
}
