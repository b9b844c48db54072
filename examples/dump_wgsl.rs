//! Writes every composed shader family (shaders/common.wgsl and the rest prepended, as the engine
//! compiles it) to DIR/<family>.wgsl, for checking with other WGSL compilers (scripts/check-wgsl
//! runs Dawn's Tint over them).
//!
//! cargo run --example dump_wgsl -- DIR

fn main() -> std::io::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "target/wgsl".into());
    std::fs::create_dir_all(&dir)?;
    for (family, source) in rnn_gpu::gpu::shaders::families() {
        std::fs::write(std::path::Path::new(&dir).join(format!("{family}.wgsl")), source)?;
    }
    eprintln!("wrote {} shader families to {dir}", rnn_gpu::gpu::shaders::families().len());
    Ok(())
}
