//! A small line chart written as a PNG, with no dependency: an RGB canvas,
//! lines (Bresenham), a 5x7 bitmap font for labels, and a PNG encoder that
//! stores the image uncompressed (zlib "stored" blocks, RFC 1950/1951, CRC-32
//! of ISO 3309 as PNG requires). Used by `concord bench dp` for its plot of
//! accuracy against epsilon.

/// An RGB colour.
pub type Rgb = [u8; 3];

/// One series of a chart.
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Colour.
    pub color: Rgb,
    /// Dashed line.
    pub dashed: bool,
    /// Points (x, y) in data units.
    pub points: Vec<(f64, f64)>,
}

/// A line chart with a logarithmic x axis.
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// Label of the y axis.
    pub y_label: String,
    /// x values to mark on the axis (data units, > 0).
    pub x_ticks: Vec<f64>,
    /// y range (data units).
    pub y_range: (f64, f64),
    /// The series.
    pub series: Vec<Series>,
}

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas { w, h, px: vec![255; w * h * 3] }
    }

    fn set(&mut self, x: i64, y: i64, c: Rgb) {
        if x < 0 || y < 0 || x as usize >= self.w || y as usize >= self.h {
            return;
        }
        let i = (y as usize * self.w + x as usize) * 3;
        if let Some(p) = self.px.get_mut(i..i + 3) {
            p.copy_from_slice(&c);
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb, width: i64, dashed: bool) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err, mut step) = (x0, y0, dx + dy, 0u64);
        loop {
            if !dashed || (step / 8) % 2 == 0 {
                for ox in 0..width {
                    for oy in 0..width {
                        self.set(x + ox - width / 2, y + oy - width / 2, c);
                    }
                }
            }
            step += 1;
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// Text at (x, y) (top left), glyphs 5x7 scaled by `scale`.
    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: Rgb) {
        for (k, ch) in s.chars().enumerate() {
            let rows = glyph(ch);
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        for dx in 0..scale {
                            for dy in 0..scale {
                                self.set(x + (k as i64 * 6 + col) * scale + dx, y + r as i64 * scale + dy, c);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Text rotated a quarter turn counter-clockwise, reading upwards, starting at (x, y) (bottom left).
    fn text_up(&mut self, x: i64, y: i64, s: &str, scale: i64, c: Rgb) {
        for (k, ch) in s.chars().enumerate() {
            for (r, bits) in glyph(ch).iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        for dx in 0..scale {
                            for dy in 0..scale {
                                self.set(x + r as i64 * scale + dx, y - (k as i64 * 6 + col) * scale - dy, c);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Width in pixels of `s` drawn at `scale`.
fn text_width(s: &str, scale: i64) -> i64 {
    s.chars().count() as i64 * 6 * scale
}

/// 5x7 bitmap glyphs (bit 4 = leftmost column); unknown characters are a box.
fn glyph(c: char) -> [u8; 7] {
    match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        ' ' => [0; 7],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '[' => [0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E],
        ']' => [0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E],
        'a' => [0, 0, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'b' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E],
        'c' => [0, 0, 0x0E, 0x10, 0x10, 0x11, 0x0E],
        'd' => [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F],
        'e' => [0, 0, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        'f' => [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08],
        'g' => [0, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        'i' => [0x04, 0, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        'l' => [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'm' => [0, 0, 0x1A, 0x15, 0x15, 0x11, 0x11],
        'n' => [0, 0, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0, 0, 0x0E, 0x11, 0x11, 0x11, 0x0E],
        'p' => [0, 0, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        'r' => [0, 0, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0, 0, 0x0E, 0x10, 0x0E, 0x01, 0x1E],
        't' => [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        'u' => [0, 0, 0x11, 0x11, 0x11, 0x13, 0x0D],
        'v' => [0, 0, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'w' => [0, 0, 0x11, 0x11, 0x15, 0x15, 0x0A],
        'x' => [0, 0, 0x11, 0x0A, 0x04, 0x0A, 0x11],
        'y' => [0, 0, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        _ => [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F],
    }
}

/// Short decimal label of a tick value.
fn tick_label(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

impl Chart {
    /// Render as a PNG file's bytes (`width` x `height` pixels).
    pub fn png(&self, width: usize, height: usize) -> Vec<u8> {
        let mut cv = Canvas::new(width, height);
        let (left, right, top, bottom) = (90i64, 260i64, 60i64, 80i64);
        let (w, h) = (width as i64, height as i64);
        let (px0, px1, py0, py1) = (left, w - right, top, h - bottom);
        let grey = [200, 200, 200];
        let black = [30, 30, 30];
        let (xmin, xmax) =
            self.x_ticks.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let (lx0, lx1) = (xmin.max(1e-12).log10(), xmax.max(1e-12).log10());
        let span = if lx1 > lx0 { lx1 - lx0 } else { 1.0 };
        let xpix = |x: f64| px0 + ((x.max(1e-12).log10() - lx0) / span * (px1 - px0) as f64).round() as i64;
        let (ymin, ymax) = self.y_range;
        let yspan = if ymax > ymin { ymax - ymin } else { 1.0 };
        let ypix = |y: f64| py1 - ((y.clamp(ymin, ymax) - ymin) / yspan * (py1 - py0) as f64).round() as i64;
        // Grid and ticks.
        for &t in &self.x_ticks {
            let x = xpix(t);
            cv.line((x, py0), (x, py1), grey, 1, false);
            let label = tick_label(t);
            cv.text(x - text_width(&label, 2) / 2, py1 + 10, &label, 2, black);
        }
        for k in 0..=5 {
            let v = ymin + yspan * k as f64 / 5.0;
            let y = ypix(v);
            cv.line((px0, y), (px1, y), grey, 1, false);
            let label = tick_label(v);
            cv.text(px0 - 10 - text_width(&label, 2), y - 7, &label, 2, black);
        }
        cv.line((px0, py0), (px0, py1), black, 2, false);
        cv.line((px0, py1), (px1, py1), black, 2, false);
        // Labels.
        cv.text((px0 + px1) / 2 - text_width(&self.x_label, 2) / 2, h - 35, &self.x_label, 2, black);
        cv.text_up(20, (py0 + py1) / 2 + text_width(&self.y_label, 2) / 2, &self.y_label, 2, black);
        cv.text(px0, 20, &self.title, 2, black);
        // Series and legend.
        for (i, s) in self.series.iter().enumerate() {
            for pair in s.points.windows(2) {
                if let [a, b] = pair {
                    cv.line((xpix(a.0), ypix(a.1)), (xpix(b.0), ypix(b.1)), s.color, 3, s.dashed);
                }
            }
            for p in &s.points {
                let (x, y) = (xpix(p.0), ypix(p.1));
                for d in -3..=3 {
                    cv.set(x + d, y, s.color);
                    cv.set(x, y + d, s.color);
                }
            }
            let ly = py0 + 10 + i as i64 * 28;
            cv.line((px1 + 20, ly + 7), (px1 + 60, ly + 7), s.color, 3, s.dashed);
            cv.text(px1 + 70, ly, &s.label, 2, black);
        }
        encode_png(width, height, &cv.px)
    }
}

/// A PNG of 8-bit RGB pixels, stored without compression.
pub fn encode_png(width: usize, height: usize, rgb: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(height * (width * 3 + 1));
    for row in rgb.chunks(width * 3).take(height) {
        raw.push(0); // filter: none
        raw.extend_from_slice(row);
    }
    // zlib: header, stored deflate blocks of at most 65,535 bytes, Adler-32.
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, b) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = b.len() as u16;
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(b);
    }
    if blocks.is_empty() {
        z.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    z.extend_from_slice(&adler32(&raw).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8 bits, RGB, deflate, no filter method extras, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(out.get(start..).unwrap_or_default());
    out.extend_from_slice(&crc.to_be_bytes());
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += u32::from(x);
            b += a;
        }
        a %= 65_521;
        b %= 65_521;
    }
    (b << 16) | a
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_match_known_values() {
        // CRC-32 and Adler-32 check values of "123456789" and Wikipedia's example.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn png_layout() {
        let png = encode_png(2, 1, &[255, 0, 0, 0, 255, 0]);
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert_eq!(png.get(12..16), Some(&b"IHDR"[..]));
        assert_eq!(png.get(16..24), Some(&[0, 0, 0, 2, 0, 0, 0, 1][..]));
        assert!(png.ends_with(&[0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82]), "IEND chunk with its CRC");
    }
}
