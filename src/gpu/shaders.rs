//! The WGSL sources, compiled into the binary. Each file under shaders/ is one kernel family;
//! shaders/common.wgsl (indexing, finiteness, stable activations) is prepended to every one, and
//! shaders/step_common.wgsl (layout, tiling and sums of the fused steps) to the three cell files.

macro_rules! step_shader {
    ($file:literal) => {
        concat!(
            include_str!("../../shaders/common.wgsl"),
            "\n",
            include_str!("../../shaders/step_common.wgsl"),
            "\n",
            include_str!(concat!("../../shaders/", $file, ".wgsl"))
        )
    };
}

macro_rules! shader {
    ($file:literal) => {
        concat!(
            include_str!("../../shaders/common.wgsl"),
            "\n",
            include_str!(concat!("../../shaders/", $file, ".wgsl"))
        )
    };
}

/// Every kernel family, by file name (without `.wgsl`).
pub const FAMILIES: &[(&str, &str)] = &[
    ("matmul", shader!("matmul")),
    ("activation", shader!("activation")),
    ("blas", shader!("blas")),
    ("reduce", shader!("reduce")),
    ("loss", shader!("loss")),
    ("optim", shader!("optim")),
    ("gather", shader!("gather")),
    ("dropout", shader!("dropout")),
    ("copy", shader!("copy")),
    ("attention", shader!("attention")),
    ("rnn", step_shader!("rnn")),
    ("lstm", step_shader!("lstm")),
    ("gru", step_shader!("gru")),
];

pub fn source(name: &str) -> Option<&'static str> {
    FAMILIES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    use super::FAMILIES;

    /// Every entry point copies the parameters into the private `p` before anything else
    /// (shaders/common.wgsl says why); a kernel that read `params` in place would still be
    /// correct, only slower, so no other test would notice.
    #[test]
    fn every_entry_point_copies_its_parameters_first() {
        for (family, source) in FAMILIES {
            assert!(source.contains("var<private> p: "), "{family}: no private copy of the parameters");
            let mut entries = 0;
            for (i, _) in source.match_indices("@compute") {
                let body = &source[i..];
                let open = body.find('{').expect("an entry point has a body");
                let first = body[open + 1..].trim_start();
                let name = body.lines().nth(1).unwrap_or("");
                assert!(
                    first.starts_with("p = params;"),
                    "{family}: `{name}` does not start with `p = params;`"
                );
                entries += 1;
            }
            assert!(entries > 0, "{family}: no entry points");
        }
    }
}
