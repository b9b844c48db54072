//! The WGSL sources, compiled into the binary. Each file under shaders/ is one kernel family,
//! composed with what it shares: shaders/common.wgsl (indexing, finiteness, stable activations),
//! the step state's indices, the family's parameter struct, generated from its Rust twin (`kernel_params!` in the
//! launcher file), and for the three cell files shaders/step_common.wgsl (layout, tiling and
//! sums of the fused steps).

use std::sync::OnceLock;

use super::kernels::{
    AttentionParams, BlasParams, CopyParams, DropoutParams, ElementwiseParams, GatherParams, MatmulParams,
    OptimParams, ReduceParams, RowParams, StepParams,
};

macro_rules! wgsl_file {
    ($name:literal) => {
        include_str!(concat!("../../shaders/", $name, ".wgsl"))
    };
}

/// Every kernel family: its name (the file's, without `.wgsl`), its parameters, and the files
/// that follow them.
const PARTS: &[(&str, &str, &[&str])] = &[
    ("matmul", MatmulParams::WGSL, &[wgsl_file!("matmul")]),
    ("activation", ElementwiseParams::WGSL, &[wgsl_file!("activation")]),
    ("blas", BlasParams::WGSL, &[wgsl_file!("blas")]),
    ("reduce", ReduceParams::WGSL, &[wgsl_file!("reduce")]),
    ("loss", RowParams::WGSL, &[wgsl_file!("loss")]),
    ("optim", OptimParams::WGSL, &[wgsl_file!("optim")]),
    ("gather", GatherParams::WGSL, &[wgsl_file!("gather")]),
    ("dropout", DropoutParams::WGSL, &[wgsl_file!("dropout")]),
    ("copy", CopyParams::WGSL, &[wgsl_file!("copy")]),
    ("attention", AttentionParams::WGSL, &[wgsl_file!("attention")]),
    ("rnn", StepParams::WGSL, &[wgsl_file!("step_common"), wgsl_file!("rnn")]),
    ("lstm", StepParams::WGSL, &[wgsl_file!("step_common"), wgsl_file!("lstm")]),
    ("gru", StepParams::WGSL, &[wgsl_file!("step_common"), wgsl_file!("gru")]),
];

/// Every kernel family, by name, with its composed source.
pub fn families() -> &'static [(&'static str, String)] {
    static FAMILIES: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    FAMILIES.get_or_init(|| {
        PARTS
            .iter()
            .map(|&(name, params, files)| {
                let mut source = format!("{}\n{}\n{params}", wgsl_file!("common"), step_state());
                for f in files {
                    source.push('\n');
                    source.push_str(f);
                }
                (name, source)
            })
            .collect()
    })
}

/// The step state's indices (src/ops.rs::step_state): where a training step's loss, gradient
/// norm and decision live on the device.
fn step_state() -> String {
    use crate::ops::step_state::*;
    let named = [("LOSS", LOSS), ("GRAD_SUMSQ", GRAD_SUMSQ), ("GRAD_NORM", GRAD_NORM)].into_iter().chain([
        ("CLIP_SCALE", CLIP_SCALE),
        ("OK", OK),
        ("STEP", STEP),
        ("SKIPPED", SKIPPED),
        ("LR", LR),
    ]);
    named.map(|(name, i)| format!("const {name}: u32 = {i}u;\n")).collect()
}

pub fn source(name: &str) -> Option<&'static str> {
    families().iter().find(|(n, _)| *n == name).map(|(_, s)| s.as_str())
}

#[cfg(test)]
mod tests {
    use super::families;

    /// Every entry point copies the parameters into the private `p` before anything else
    /// (shaders/common.wgsl says why); a kernel that read `params` in place would still be
    /// correct, only slower, so no other test would notice.
    #[test]
    fn every_entry_point_copies_its_parameters_first() {
        for (family, source) in families() {
            assert!(source.contains("var<private> p: "), "{family}: no private copy of the parameters");
            let mut entries = 0;
            for (i, _) in source.match_indices("@compute") {
                let body = &source[i..];
                let open = body.find('{').expect("an entry point has a body");
                let first = body[open + 1..].trim_start();
                let name = body.lines().nth(1).unwrap_or("");
                let begins = first.starts_with("let ")
                    && first.split(';').next().unwrap_or("").contains("= begin(gid, nwg)");
                assert!(
                    first.starts_with("p = params;") || begins,
                    "{family}: `{name}` starts with neither `p = params;` nor a call of `begin`"
                );
                entries += 1;
            }
            assert!(entries > 0, "{family}: no entry points");
        }
    }
}
