//! The image type every stage shares: packed 8-bit RGB, plus the few pixel operations the pipeline
//! needs (bilinear sampling for model inputs, boxes and text for annotated snapshots, JPEG).

use std::time::Duration;

/// A packed RGB frame (`width * 3` bytes per row) with its stream timestamp.
#[derive(Clone)]
pub struct RgbFrame {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
    /// Running time of the frame in its camera's stream (monotonic across file loops/reconnects).
    pub pts: Duration,
}

impl std::fmt::Debug for RgbFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RgbFrame({}x{} @ {:?})", self.width, self.height, self.pts)
    }
}

/// An axis-aligned box in pixel coordinates, `x2`/`y2` exclusive.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    pub fn w(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }
    pub fn h(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }
    pub fn area(&self) -> f32 {
        self.w() * self.h()
    }
    pub fn center(&self) -> (f32, f32) {
        ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)
    }
    /// A 2×2 grid of tiles over the box, each 55 % of its sides, so neighbours overlap by 10 %
    /// (a face on a seam is whole in one of them): a second detector pass on them at the same
    /// input width sees about twice the zoom.
    pub fn tiles_2x2(&self) -> [BBox; 4] {
        let (tw, th) = ((self.w() * 0.55).round(), (self.h() * 0.55).round());
        let (x, y) = (self.x2 - tw, self.y2 - th);
        [
            BBox { x1: self.x1, y1: self.y1, x2: self.x1 + tw, y2: self.y1 + th },
            BBox { x1: x, y1: self.y1, x2: self.x2, y2: self.y1 + th },
            BBox { x1: self.x1, y1: y, x2: self.x1 + tw, y2: self.y2 },
            BBox { x1: x, y1: y, x2: self.x2, y2: self.y2 },
        ]
    }

    pub fn iou(&self, o: &BBox) -> f32 {
        let iw = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let ih = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        let inter = iw * ih;
        let union = self.area() + o.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
    pub fn scale(&self, sx: f32, sy: f32) -> BBox {
        BBox { x1: self.x1 * sx, y1: self.y1 * sy, x2: self.x2 * sx, y2: self.y2 * sy }
    }
    pub fn offset(&self, dx: f32, dy: f32) -> BBox {
        BBox { x1: self.x1 + dx, y1: self.y1 + dy, x2: self.x2 + dx, y2: self.y2 + dy }
    }
    /// Grows the box by `margin` × its size on every side, clamped to `w`×`h`.
    pub fn expand(&self, margin: f32, w: f32, h: f32) -> BBox {
        let (mx, my) = (self.w() * margin, self.h() * margin);
        BBox {
            x1: (self.x1 - mx).max(0.0),
            y1: (self.y1 - my).max(0.0),
            x2: (self.x2 + mx).min(w),
            y2: (self.y2 + my).min(h),
        }
    }
}

impl RgbFrame {
    pub fn new(width: u32, height: u32) -> RgbFrame {
        RgbFrame { width, height, data: vec![0; width as usize * height as usize * 3], pts: Duration::ZERO }
    }

    pub fn from_image(img: &image::RgbImage) -> RgbFrame {
        RgbFrame { width: img.width(), height: img.height(), data: img.as_raw().clone(), pts: Duration::ZERO }
    }

    /// Copies an RGB image whose rows are `stride` bytes apart (GStreamer pads rows to 4 bytes).
    pub fn from_rows(src: &[u8], width: u32, height: u32, stride: usize, pts: Duration) -> RgbFrame {
        Self::from_rows_into(Vec::new(), src, width, height, stride, pts)
    }

    /// [`from_rows`](Self::from_rows) into a spare buffer (no allocation when it is large enough).
    pub fn from_rows_into(
        mut data: Vec<u8>,
        src: &[u8],
        width: u32,
        height: u32,
        stride: usize,
        pts: Duration,
    ) -> RgbFrame {
        let row = width as usize * 3;
        data.clear();
        data.reserve_exact(row * height as usize);
        for y in 0..height as usize {
            data.extend_from_slice(&src[y * stride..y * stride + row]);
        }
        RgbFrame { width, height, data, pts }
    }

    /// The whole frame as a box.
    pub fn full(&self) -> BBox {
        BBox { x1: 0.0, y1: 0.0, x2: self.width as f32, y2: self.height as f32 }
    }

    /// Draws a closed polygon outline (points in pixels), `thickness` pixels wide.
    pub fn draw_polygon(&mut self, points: &[(f32, f32)], color: [u8; 3], thickness: u32) {
        let (w, h) = (self.width as i64, self.height as i64);
        let r = thickness as i64 / 2;
        for (k, &(ax, ay)) in points.iter().enumerate() {
            let (bx, by) = points[(k + 1) % points.len()];
            let steps = (bx - ax).abs().max((by - ay).abs()).ceil().max(1.0) as i64;
            for s in 0..=steps {
                let t = s as f32 / steps as f32;
                let (x, y) = ((ax + (bx - ax) * t).round() as i64, (ay + (by - ay) * t).round() as i64);
                for dy in -r..=r {
                    for dx in -r..=r {
                        self.put_clipped(x + dx, y + dy, color, w, h);
                    }
                }
            }
        }
    }

    pub fn stride(&self) -> usize {
        self.width as usize * 3
    }

    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let i = y as usize * self.stride() + x as usize * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Bilinear resampling of the region `roi` (pixels) to `dw`×`dh`, with OpenCV's half-pixel
    /// convention. Calls `put(dst_index, [r, g, b])` for every destination pixel in row-major order;
    /// the caller decides layout (NCHW/NHWC) and normalisation.
    pub fn sample_bilinear(&self, roi: BBox, dw: usize, dh: usize, mut put: impl FnMut(usize, [f32; 3])) {
        let (sw, sh) = (self.width as usize, self.height as usize);
        let (rx, ry) = (roi.x1.max(0.0), roi.y1.max(0.0));
        let (rw, rh) = (roi.w().max(1.0), roi.h().max(1.0));
        let (fx, fy) = (rw / dw as f32, rh / dh as f32);
        let stride = self.stride();
        let d = &self.data;
        // Precompute the horizontal taps once per call (in a per-thread buffer: no allocation per
        // frame once it has grown to the widest output).
        thread_local! {
            static TAPS: std::cell::RefCell<Vec<(usize, usize, f32)>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let mut xs = TAPS.with(|t| std::mem::take(&mut *t.borrow_mut()));
        xs.clear();
        xs.extend((0..dw).map(|dx| {
            let x = (rx + (dx as f32 + 0.5) * fx - 0.5).clamp(0.0, (sw - 1) as f32);
            let x0 = x.floor() as usize;
            (x0 * 3, (x0 + 1).min(sw - 1) * 3, x - x0 as f32)
        }));
        for dy in 0..dh {
            let y = (ry + (dy as f32 + 0.5) * fy - 0.5).clamp(0.0, (sh - 1) as f32);
            let y0 = y.floor() as usize;
            let y1 = (y0 + 1).min(sh - 1);
            let wy = y - y0 as f32;
            let (r0, r1) = (&d[y0 * stride..], &d[y1 * stride..]);
            for (dx, &(i0, i1, wx)) in xs.iter().enumerate() {
                let mut px = [0f32; 3];
                for (c, v) in px.iter_mut().enumerate() {
                    let top = r0[i0 + c] as f32 * (1.0 - wx) + r0[i1 + c] as f32 * wx;
                    let bot = r1[i0 + c] as f32 * (1.0 - wx) + r1[i1 + c] as f32 * wx;
                    *v = top * (1.0 - wy) + bot * wy;
                }
                put(dy * dw + dx, px);
            }
        }
        TAPS.with(|t| *t.borrow_mut() = xs);
    }

    /// Draws a rectangle outline of `thickness` pixels.
    pub fn draw_box(&mut self, b: BBox, color: [u8; 3], thickness: u32) {
        let (w, h) = (self.width as i64, self.height as i64);
        let (x1, y1) = (b.x1.round() as i64, b.y1.round() as i64);
        let (x2, y2) = (b.x2.round() as i64 - 1, b.y2.round() as i64 - 1);
        for t in 0..thickness as i64 {
            for x in x1..=x2 {
                self.put_clipped(x, y1 + t, color, w, h);
                self.put_clipped(x, y2 - t, color, w, h);
            }
            for y in y1..=y2 {
                self.put_clipped(x1 + t, y, color, w, h);
                self.put_clipped(x2 - t, y, color, w, h);
            }
        }
    }

    fn put_clipped(&mut self, x: i64, y: i64, c: [u8; 3], w: i64, h: i64) {
        if x >= 0 && y >= 0 && x < w && y < h {
            let i = y as usize * self.stride() + x as usize * 3;
            self.data[i..i + 3].copy_from_slice(&c);
        }
    }

    /// Draws `text` (digits, `.`, `:`, `%`, space and A–Z; other characters as blanks) with a 3×5
    /// pixel font scaled by `scale`, on a filled background, top-left at (x, y).
    pub fn draw_text(&mut self, x: i64, y: i64, text: &str, color: [u8; 3], bg: [u8; 3], scale: i64) {
        let (w, h) = (self.width as i64, self.height as i64);
        let cols = text.chars().count() as i64 * 4 + 1;
        for py in 0..7 * scale {
            for px in 0..cols * scale {
                self.put_clipped(x + px, y + py, bg, w, h);
            }
        }
        for (i, ch) in text.chars().enumerate() {
            let glyph = glyph(ch.to_ascii_uppercase());
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..3 {
                    if bits & (0b100 >> col) != 0 {
                        for sy in 0..scale {
                            for sx in 0..scale {
                                let gx = x + (1 + i as i64 * 4 + col) * scale + sx;
                                let gy = y + (1 + row as i64) * scale + sy;
                                self.put_clipped(gx, gy, color, w, h);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Encodes as baseline JPEG.
    pub fn to_jpeg(&self, quality: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
        image::ImageEncoder::write_image(enc, &self.data, self.width, self.height, image::ExtendedColorType::Rgb8)
            .expect("encoding a well-formed RGB buffer to memory cannot fail");
        out
    }
}

/// Luma (BT.601) of an RGB pixel.
pub fn luma([r, g, b]: [f32; 3]) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// A 3×5 bitmap font: five rows, three bits each (MSB = left column).
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        ':' => [0, 2, 0, 2, 0],
        '%' => [5, 1, 2, 4, 5],
        '#' => [5, 7, 5, 7, 5],
        '-' => [0, 0, 7, 0, 0],
        '_' => [0, 0, 0, 0, 7],
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [7, 4, 4, 4, 7],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [7, 4, 5, 5, 7],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 7],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [7, 5, 5, 5, 7],
        'P' => [7, 5, 7, 4, 4],
        'Q' => [7, 5, 5, 7, 1],
        'R' => [6, 5, 6, 5, 5],
        'S' => [7, 4, 7, 1, 7],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        _ => [0; 5],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tile_grid_covers_the_image_with_overlapping_tiles() {
        let t = BBox { x1: 0.0, y1: 0.0, x2: 400.0, y2: 300.0 }.tiles_2x2();
        // every tile is 55 % of the sides, inside the image, and together they reach each edge
        for b in &t {
            assert_eq!((b.w(), b.h()), (220.0, 165.0));
            assert!(b.x1 >= 0.0 && b.y1 >= 0.0 && b.x2 <= 400.0 && b.y2 <= 300.0);
        }
        assert_eq!((t[0].x1, t[0].y1, t[3].x2, t[3].y2), (0.0, 0.0, 400.0, 300.0));
        // neighbours overlap (by 10 % of the side), so a face on a seam is whole in one of them
        assert_eq!((t[0].x2 - t[1].x1, t[0].y2 - t[2].y1), (40.0, 30.0));
    }

    #[test]
    fn iou_and_expand() {
        let a = BBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 };
        let b = BBox { x1: 5.0, y1: 0.0, x2: 15.0, y2: 10.0 };
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(a.expand(0.5, 12.0, 100.0), BBox { x1: 0.0, y1: 0.0, x2: 12.0, y2: 15.0 });
    }

    #[test]
    fn bilinear_identity_and_average() {
        let mut f = RgbFrame::new(2, 1);
        f.data = vec![0, 0, 0, 200, 100, 50];
        let mut out = vec![[0f32; 3]; 2];
        f.sample_bilinear(BBox { x1: 0.0, y1: 0.0, x2: 2.0, y2: 1.0 }, 2, 1, |i, p| out[i] = p);
        assert_eq!(out, vec![[0.0, 0.0, 0.0], [200.0, 100.0, 50.0]]);
        let mut one = [0f32; 3];
        f.sample_bilinear(BBox { x1: 0.0, y1: 0.0, x2: 2.0, y2: 1.0 }, 1, 1, |_, p| one = p);
        assert_eq!(one, [100.0, 50.0, 25.0]);
    }

    #[test]
    fn box_and_text_draw_inside_bounds() {
        let mut f = RgbFrame::new(20, 20);
        f.draw_box(BBox { x1: 2.0, y1: 2.0, x2: 30.0, y2: 10.0 }, [255, 0, 0], 2);
        assert_eq!(f.pixel(2, 2), [255, 0, 0]);
        assert_eq!(f.pixel(5, 5), [0, 0, 0]);
        f.draw_text(0, 12, "0.93", [255, 255, 255], [1, 1, 1], 1);
        assert_eq!(f.pixel(0, 12), [1, 1, 1]);
        let jpeg = f.to_jpeg(90);
        assert_eq!(&jpeg[..2], &[0xFF, 0xD8]);
    }
}
