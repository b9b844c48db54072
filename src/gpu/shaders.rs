//! The WGSL sources, compiled into the binary. Each file under shaders/ is one kernel family;
//! shaders/common.wgsl (indexing, finiteness, stable activations) is prepended to every one.

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
];

pub fn source(name: &str) -> Option<&'static str> {
    FAMILIES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}
