//! What one vec4 access costs on this adapter, by kind: the measurements behind the kernels'
//! shape (BENCHMARKS.md, "What a load costs on lavapipe"). Each kernel runs 4,096 threads through
//! 256 iterations of 8 operations of one kind; criterion's "elem/s" are vec4 operations per
//! second. On lavapipe (Mesa 22.3) a storage-buffer load is a loop over the SIMD lanes whether or
//! not the address varies, a texel fetch is one gather, and a subgroup broadcast a shuffle; a
//! sampled texture's fetch is a call with per-lane mip-level arithmetic around the gather, a
//! read-only storage texture's load the gather alone, inline.
//! This talks to wgpu directly: it measures the driver, not the engine.
//! `RNN_GPU_BENCH_QUICK=1` shrinks it for a smoke run.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use wgpu::util::DeviceExt;

const OPS_PER_ITER: u32 = 8;

fn quick() -> bool {
    std::env::var("RNN_GPU_BENCH_QUICK").as_deref() == Ok("1")
}

/// (name, whether it needs subgroups, the expression of operation `{i}` in iteration `k`).
const KINDS: [(&str, bool, &str); 6] = [
    ("alu_add", false, "v + vec4<f32>(f32({i}))"),
    ("subgroup_broadcast", true, "subgroupBroadcast(v, {i}u)"),
    ("texture_load_varying", false, "textureLoad(tex, vec2<u32>((k + {i}u) % 64u, gid.x % 64u), 0)"),
    ("storage_texture_load_varying", false, "textureLoad(stex, vec2<u32>((k + {i}u) % 64u, gid.x % 64u))"),
    ("storage_load_varying", false, "buf[(gid.x % 64u) * 64u + (k + {i}u) % 64u]"),
    ("storage_load_same_address", false, "buf[(wg.x % 64u) * 64u + (k + {i}u) % 64u]"),
];

fn source(expr: &str, iters: u32) -> String {
    let mut body = String::new();
    for i in 0..OPS_PER_ITER {
        body += &format!("        a{} += {};\n", i % 2, expr.replace("{i}", &i.to_string()));
    }
    format!(
        "@group(0) @binding(0) var<storage, read> buf: array<vec4<f32>>;
@group(0) @binding(1) var tex: texture_2d<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(3) var stex: texture_storage_2d<rgba32float, read>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wg: vec3<u32>) {{
    var v = vec4<f32>(f32(gid.x));
    var a0 = buf[0] + textureLoad(tex, vec2<u32>(0u, 0u), 0) + textureLoad(stex, vec2<u32>(0u, 0u));
    var a1 = vec4<f32>();
    for (var k = 0u; k < {iters}u; k++) {{
{body}        v = v * 1.0001;
    }}
    out[gid.x] = a0 + a1;
}}
"
    )
}

fn bench(c: &mut Criterion) {
    if std::env::var("RNN_GPU_NO_GPU_TESTS").as_deref() == Ok("1") {
        eprintln!("benchmark skipped: RNN_GPU_NO_GPU_TESTS=1");
        return;
    }
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default()))
        .expect("a GPU adapter (apt-get install mesa-vulkan-drivers)");
    eprintln!("adapter: {} ({:?})", adapter.get_info().name, adapter.get_info().backend);
    let features = adapter.features() & wgpu::Features::SUBGROUP;
    let (device, queue) = pollster::block_on(
        adapter.request_device(&wgpu::DeviceDescriptor { required_features: features, ..Default::default() }),
    )
    .expect("a device");
    let (threads, iters) = if quick() { (64u32, 4u32) } else { (4096, 256) };
    let data: Vec<f32> = (0..64 * 64 * 4).map(|i| (i % 7) as f32).collect();
    let buf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&data),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let texture = device.create_texture_with_data(
        &queue,
        &wgpu::TextureDescriptor {
            label: None,
            size: wgpu::Extent3d { width: 64, height: 64, depth_or_array_layers: 1 },
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Float,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::STORAGE_BINDING,
            view_formats: &[],
        },
        wgpu::util::TextureDataOrder::LayerMajor,
        bytemuck::cast_slice(&data),
    );
    let view = texture.create_view(&Default::default());
    let out = device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: threads as u64 * 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let mut group = c.benchmark_group("loads");
    group.sample_size(10);
    group.throughput(Throughput::Elements((threads * iters * OPS_PER_ITER) as u64));
    for (name, needs_subgroups, expr) in KINDS {
        if needs_subgroups && !features.contains(wgpu::Features::SUBGROUP) {
            eprintln!("{name}: skipped, the adapter has no subgroup operations");
            continue;
        }
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(name),
            source: wgpu::ShaderSource::Wgsl(source(expr, iters).into()),
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(name),
            layout: None,
            module: &module,
            entry_point: Some("main"),
            compilation_options: Default::default(),
            cache: None,
        });
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: buf.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: wgpu::BindingResource::TextureView(&view) },
                wgpu::BindGroupEntry { binding: 2, resource: out.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 3, resource: wgpu::BindingResource::TextureView(&view) },
            ],
        });
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut enc = device.create_command_encoder(&Default::default());
                {
                    let mut pass = enc.begin_compute_pass(&Default::default());
                    pass.set_pipeline(&pipeline);
                    pass.set_bind_group(0, &bind_group, &[]);
                    pass.dispatch_workgroups(threads / 64, 1, 1);
                }
                queue.submit([enc.finish()]);
                device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
