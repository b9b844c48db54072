//! Matmul throughput, GPU (each tile shape, and the plan's choice), the native CPU device and the reference in the same run, at square sizes and
//! at the skinny shapes of a recurrence (B x H times H x 4H). Criterion's "elem/s" are FLOP/s
//! (2·m·n·k per product). `RNN_GPU_BENCH_QUICK=1` shrinks the sizes for a smoke run.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rnn_gpu::gpu::kernels as gk;
use rnn_gpu::gpu::{GpuContext, Program};
use rnn_gpu::ops::Matmul;
use rnn_gpu::reference::kernels as cpu;
use rnn_gpu::rng::Rng;
use rnn_gpu::verify;

fn quick() -> bool {
    std::env::var("RNN_GPU_BENCH_QUICK").as_deref() == Ok("1")
}

fn shapes() -> Vec<(String, Matmul)> {
    let mut v = Vec::new();
    let squares: &[usize] = if quick() { &[64] } else { &[256, 512, 1024] };
    for &s in squares {
        v.push((format!("{s}^3"), Matmul::new(s, s, s)));
    }
    let skinny: &[(usize, usize)] = if quick() {
        &[(8, 64)]
    } else {
        &[(1, 256), (8, 256), (32, 256), (64, 256), (32, 512), (64, 512), (64, 1024)]
    };
    for &(b, h) in skinny {
        // the recurrence: h (B, H) times W_hh^T (H, 4H)
        v.push((format!("B{b}xH{h}x4H"), Matmul::new(b, 4 * h, h).trans_b()));
    }
    v
}

fn bench(c: &mut Criterion) {
    if std::env::var("RNN_GPU_NO_GPU_TESTS").as_deref() == Ok("1") {
        eprintln!("benchmark skipped: RNN_GPU_NO_GPU_TESTS=1");
        return;
    }
    let ctx: Arc<GpuContext> =
        GpuContext::new().expect("a GPU adapter (apt-get install mesa-vulkan-drivers)");
    eprintln!("adapter: {}", ctx.describe());
    let mut group = c.benchmark_group("matmul");
    group.sample_size(10);
    for (name, p) in shapes() {
        group.throughput(Throughput::Elements(p.flops() as u64));
        let mut rng = Rng::seed_from_u64(1);
        let a = rng.uniform_vec(p.m * p.k, -1.0, 1.0);
        let b = rng.uniform_vec(p.k * p.n, -1.0, 1.0);
        let ga = ctx.upload("A", &[a.len()], &a).unwrap();
        let gb = ctx.upload("B", &[b.len()], &b).unwrap();
        let gc = ctx.alloc("C", &[p.m * p.n]).unwrap();
        let chosen = gk::MatmulPlan::new(&p);
        for plan in gk::MatmulPlan::all(&p) {
            // Check before timing: refuse to time a kernel that disagrees with its twin.
            let check =
                rnn_gpu::wait::block_on("bench", verify::check_matmul(&ctx, p, plan, false, 7)).unwrap();
            assert!(check.pass(), "refusing to time a wrong kernel: {check}");
            let mut prog = Program::new(&ctx);
            gk::matmul_planned(&mut prog, &gc, &ga, &gb, None, plan).unwrap();
            let id = format!("gpu_{}{}", plan.name(), if plan == chosen { "_chosen" } else { "" });
            group.bench_function(BenchmarkId::new(id, &name), |bencher| {
                bencher.iter(|| {
                    prog.run().unwrap();
                    ctx.download(&gc.view(0, &[1]).unwrap()).unwrap()
                })
            });
        }
        let mut cbuf = vec![0.0f32; p.m * p.n];
        let isa = rnn_gpu::native::sgemm::isa().unwrap();
        group.bench_function(BenchmarkId::new("native", &name), |bencher| {
            bencher.iter(|| rnn_gpu::native::kernels::matmul(isa, &mut cbuf, &a, &b, p))
        });
        group.bench_function(BenchmarkId::new("reference", &name), |bencher| {
            bencher.iter(|| cpu::matmul(&mut cbuf, &a, &b, p))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
