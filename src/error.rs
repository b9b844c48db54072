//! One error type for the whole library. Every variant says what was wrong, the value, and what
//! was expected, so that a caller can act on the message without reading the source.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two shapes that must agree do not.
    #[error("{op}: {what} has shape {got:?}, expected {expected:?}")]
    Shape { op: &'static str, what: String, got: Vec<usize>, expected: Vec<usize> },

    /// A value outside the range the operation accepts.
    #[error("{op}: {what} = {value} is out of range; expected {expected}")]
    OutOfRange { op: &'static str, what: String, value: String, expected: String },

    /// A configuration or argument that makes no sense, with the reason.
    #[error("{op}: {message}")]
    Invalid { op: &'static str, message: String },

    /// An input holding NaN or an infinity.
    #[error("{op}: {what} holds a non-finite value ({value}) at index {index}; inputs must be finite")]
    NonFinite { op: &'static str, what: String, index: usize, value: f32 },

    /// A training step whose loss or gradient norm was not finite; the weights were left as they were.
    #[error(
        "training step refused: loss = {loss}, gradient norm = {grad_norm} ({skipped} step(s) refused so far); \
         the weights are unchanged. Lower the learning rate or enable gradient clipping"
    )]
    NonFiniteStep { loss: f32, grad_norm: f32, skipped: u32 },

    /// A buffer larger than the adapter allows.
    #[error(
        "{what}: {bytes} bytes exceeds the adapter's {limit_name} of {limit} bytes; use smaller batches, sequences or hidden sizes"
    )]
    BufferTooLarge { what: String, bytes: u64, limit_name: &'static str, limit: u64 },

    /// More memory than the machine has available, refused before allocating it.
    #[error(
        "{what}: the model would need {} MiB, and this machine has {} MiB available; use smaller hidden sizes, batches or sequences",
        needed >> 20,
        available >> 20
    )]
    OutOfMemory { what: String, needed: u64, available: u64 },

    /// No GPU adapter could be found or created.
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),

    /// The GPU reported an error (validation, out of memory, shader compilation).
    #[error("GPU error in {op}: {message}")]
    Gpu { op: String, message: String },

    /// The device was lost (driver reset, GPU removed); the model's GPU state is gone.
    #[error("the GPU device was lost ({0}); reload the model to continue")]
    DeviceLost(String),

    /// A model or checkpoint file that cannot be read as what it claims to be.
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn shape(
        op: &'static str,
        what: impl Into<String>,
        got: &[usize],
        expected: &[usize],
    ) -> Self {
        Error::Shape { op, what: what.into(), got: got.to_vec(), expected: expected.to_vec() }
    }

    pub(crate) fn invalid(op: &'static str, message: impl Into<String>) -> Self {
        Error::Invalid { op, message: message.into() }
    }

    pub(crate) fn range(
        op: &'static str,
        what: impl Into<String>,
        value: impl ToString,
        expected: impl Into<String>,
    ) -> Self {
        Error::OutOfRange { op, what: what.into(), value: value.to_string(), expected: expected.into() }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::File { path: path.into(), message: message.into() }
    }
}

/// Refuses NaN and infinities in caller data before it reaches a kernel.
/// `n` must be at least 1 (a size, a count, a width).
pub(crate) fn check_nonzero(op: &'static str, what: &str, n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::range(op, what, 0, "at least 1"));
    }
    Ok(())
}

/// A flat parameter buffer must hold exactly `expected` finite values.
pub(crate) fn check_flat_params(op: &'static str, params: &[f32], expected: usize) -> Result<()> {
    if params.len() != expected {
        return Err(Error::shape(op, "flat parameters", &[params.len()], &[expected]));
    }
    check_finite(op, "parameters", params)
}

pub(crate) fn check_finite(op: &'static str, what: &str, data: &[f32]) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite { op, what: what.to_string(), index, value: data[index] }),
    }
}

/// The memory this machine has available now (Linux's `MemAvailable`), in bytes; `None` where it
/// cannot be read (and in a browser, which has no files).
pub(crate) fn available_memory() -> Option<u64> {
    if cfg!(target_arch = "wasm32") {
        return None;
    }
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
