//! The loss curve as a PNG: training and validation loss against the step, drawn with a tiny
//! built-in bitmap font (no font files, no system libraries).

use std::path::Path;

use crate::error::{Error, Result};

const W: usize = 800;
const H: usize = 480;
const LEFT: usize = 70;
const RIGHT: usize = 20;
const TOP: usize = 30;
const BOTTOM: usize = 50;

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const AXIS: Rgb = [40, 40, 40];
const GRID: Rgb = [225, 225, 225];
const TRAIN: Rgb = [31, 119, 180];
const VALID: Rgb = [230, 110, 20];

/// 5x7 glyphs, one row a byte (low 5 bits, leftmost pixel the highest bit).
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        'a' => [0, 0, 14, 1, 15, 17, 15],
        'd' => [1, 1, 13, 19, 17, 17, 15],
        'e' => [0, 0, 14, 17, 31, 16, 14],
        'i' => [4, 0, 12, 4, 4, 4, 14],
        'k' => [16, 16, 18, 20, 24, 20, 18],
        'l' => [12, 4, 4, 4, 4, 4, 14],
        'n' => [0, 0, 22, 25, 17, 17, 17],
        'o' => [0, 0, 14, 17, 17, 17, 14],
        'p' => [0, 0, 30, 17, 30, 16, 16],
        'r' => [0, 0, 22, 25, 16, 16, 16],
        's' => [0, 0, 15, 16, 14, 1, 30],
        't' => [8, 8, 28, 8, 8, 9, 6],
        'v' => [0, 0, 17, 17, 17, 10, 4],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        _ => [0; 7],
    }
}

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Canvas {
        Canvas { px: WHITE.repeat(W * H) }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn line(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, c: Rgb, thick: i64) {
        let n = ((x1 - x0).abs().max((y1 - y0).abs()) as usize).max(1);
        for k in 0..=n {
            let t = k as f64 / n as f64;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            for dx in 0..thick {
                for dy in 0..thick {
                    self.set(x as i64 + dx, y as i64 + dy, c);
                }
            }
        }
    }

    fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb) {
        for (k, ch) in s.chars().enumerate() {
            let g = glyph(ch);
            for (row, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (16 >> col) != 0 {
                        self.set(x + k as i64 * 6 + col, y + row as i64, c);
                    }
                }
            }
        }
    }
}

/// Tick values between lo and hi at a round spacing.
fn ticks(lo: f64, hi: f64, want: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-9);
    let raw = span / want as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step =
        [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| span / s <= want as f64).unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    (0..).map(|i| first + i as f64 * step).take_while(|v| *v <= hi + 1e-9).collect()
}

fn label(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() { format!("{v:.0}") } else { format!("{v:.2}") }
}

/// Draws `train` and `valid` (step, loss) series to `path` (written atomically).
pub fn loss_curve(path: &Path, train: &[(f64, f64)], valid: &[(f64, f64)]) -> Result<()> {
    let all: Vec<&(f64, f64)> = train.iter().chain(valid).filter(|p| p.1.is_finite()).collect();
    if all.is_empty() {
        return Err(Error::invalid("loss_curve", "no finite points to draw"));
    }
    let (x0, x1) =
        (all.iter().map(|p| p.0).fold(f64::MAX, f64::min), all.iter().map(|p| p.0).fold(f64::MIN, f64::max));
    let (y0, y1) =
        (all.iter().map(|p| p.1).fold(f64::MAX, f64::min), all.iter().map(|p| p.1).fold(f64::MIN, f64::max));
    let (x1, y0, y1) = (x1.max(x0 + 1.0), (y0 - 0.05 * (y1 - y0)).max(0.0), y1 + 0.05 * (y1 - y0) + 1e-6);
    let px = |x: f64| LEFT as f64 + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT) as f64;
    let py = |y: f64| (H - BOTTOM) as f64 - (y - y0) / (y1 - y0) * (H - TOP - BOTTOM) as f64;
    let mut c = Canvas::new();
    for v in ticks(y0, y1, 6) {
        c.line(LEFT as f64, py(v), (W - RIGHT) as f64, py(v), GRID, 1);
        let s = label(v);
        c.text(LEFT as i64 - 8 - 6 * s.len() as i64, py(v) as i64 - 3, &s, AXIS);
    }
    for v in ticks(x0, x1, 8) {
        c.line(px(v), TOP as f64, px(v), (H - BOTTOM) as f64, GRID, 1);
        let s = label(v);
        c.text(px(v) as i64 - 3 * s.len() as i64, (H - BOTTOM + 8) as i64, &s, AXIS);
    }
    c.line(LEFT as f64, TOP as f64, LEFT as f64, (H - BOTTOM) as f64, AXIS, 1);
    c.line(LEFT as f64, (H - BOTTOM) as f64, (W - RIGHT) as f64, (H - BOTTOM) as f64, AXIS, 1);
    c.text((W / 2 - 12) as i64, (H - 20) as i64, "step", AXIS);
    c.text(8, 10, "loss (nats)", AXIS);
    for (series, color) in [(train, TRAIN), (valid, VALID)] {
        for w in series.windows(2) {
            c.line(px(w[0].0), py(w[0].1), px(w[1].0), py(w[1].1), color, 2);
        }
        if series.len() == 1 {
            c.line(px(series[0].0) - 2.0, py(series[0].1), px(series[0].0) + 2.0, py(series[0].1), color, 3);
        }
    }
    let lx = (W - RIGHT - 120) as f64;
    c.line(lx, (TOP + 10) as f64, lx + 20.0, (TOP + 10) as f64, TRAIN, 3);
    c.text(lx as i64 + 26, TOP as i64 + 7, "train", AXIS);
    c.line(lx, (TOP + 26) as f64, lx + 20.0, (TOP + 26) as f64, VALID, 3);
    c.text(lx as i64 + 26, TOP as i64 + 23, "valid", AXIS);

    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, W as u32, H as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().map_err(|e| Error::file(path, e.to_string()))?;
        w.write_image_data(&c.px).map_err(|e| Error::file(path, e.to_string()))?;
    }
    crate::io::write_atomic(path, &bytes)
}
