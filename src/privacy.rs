//! Privacy masks: polygons in normalised [0,1] image coordinates, one file per camera in
//! `privacy-masks/`. A mask is applied to every analysis frame before inference and burnt into every
//! stored pixel (clip frames and snapshots), so masked areas never reach a model or the store.
//!
//! Masks and zones are different things: a *mask* removes pixels (privacy, JS 17/19); a *zone*
//! (in a rule) only says where a detection counts. Both use [`Polygon`].
//!
//! File format (TOML):
//! ```toml
//! [[polygons]]
//! name = "window"                                  # optional, used in messages
//! points = [[0.0, 0.0], [0.3, 0.0], [0.3, 0.4]]    # x, y in [0, 1]; at least 3 points
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A point in normalised image coordinates: (0,0) top-left, (1,1) bottom-right.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct NormPoint {
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    pub name: String,
    pub points: Vec<NormPoint>,
}

impl Polygon {
    /// Even-odd point-in-polygon test in normalised coordinates.
    pub fn contains(&self, x: f64, y: f64) -> bool {
        let p = &self.points;
        let mut inside = false;
        let mut j = p.len() - 1;
        for i in 0..p.len() {
            let (a, b) = (p[i], p[j]);
            if (a.y > y) != (b.y > y) && x < (b.x - a.x) * (y - a.y) / (b.y - a.y) + a.x {
                inside = !inside;
            }
            j = i;
        }
        inside
    }

    /// The polygon's points in pixels of a `w`×`h` frame.
    pub fn pixels(&self, w: u32, h: u32) -> Vec<(f32, f32)> {
        self.points.iter().map(|p| ((p.x * w as f64) as f32, (p.y * h as f64) as f32)).collect()
    }

    /// Bounding box in pixels of a `w`×`h` frame, grown by `margin` × its size on every side
    /// (clamped to the frame): the region inference runs on when a rule has this zone.
    pub fn bbox_px(&self, w: u32, h: u32, margin: f32) -> crate::frame::BBox {
        let (mut x1, mut y1, mut x2, mut y2) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
        for p in &self.points {
            (x1, y1, x2, y2) = (x1.min(p.x), y1.min(p.y), x2.max(p.x), y2.max(p.y));
        }
        let b =
            crate::frame::BBox { x1: x1 as f32, y1: y1 as f32, x2: x2 as f32, y2: y2 as f32 }.scale(w as f32, h as f32);
        b.expand(margin, w as f32, h as f32)
    }

    /// Whether a box's centre (pixels of a `w`×`h` frame) is inside.
    pub fn contains_center(&self, b: &crate::frame::BBox, w: u32, h: u32) -> bool {
        let (cx, cy) = b.center();
        self.contains((cx / w as f32) as f64, (cy / h as f32) as f64)
    }

    /// Pixel spans `[x0, x1)` covered in row `row` of a `w`×`h` image (pixel centres sampled).
    fn row_spans(&self, row: u32, w: u32, h: u32, out: &mut Vec<(u32, u32)>) {
        let y = (row as f64 + 0.5) / h as f64;
        let mut xs: Vec<f64> = Vec::new();
        let p = &self.points;
        let mut j = p.len() - 1;
        for i in 0..p.len() {
            let (a, b) = (p[i], p[j]);
            if (a.y > y) != (b.y > y) {
                xs.push((b.x - a.x) * (y - a.y) / (b.y - a.y) + a.x);
            }
            j = i;
        }
        xs.sort_by(f64::total_cmp);
        for pair in xs.chunks_exact(2) {
            // pixel x is inside when its centre (x+0.5)/w lies in [pair0, pair1)
            let x0 = (pair[0] * w as f64 - 0.5).ceil().max(0.0) as u32;
            let x1 = ((pair[1] * w as f64 - 0.5).ceil().max(0.0) as u32).min(w);
            if x1 > x0 {
                out.push((x0, x1));
            }
        }
    }
}

/// Checks a polygon: at least 3 points, every coordinate finite and in [0, 1].
pub fn validate_polygon(points: &[NormPoint]) -> Result<(), String> {
    if points.len() < 3 {
        return Err(format!("a polygon needs at least 3 points, this one has {}", points.len()));
    }
    if points.len() > MAX_POINTS {
        return Err(format!("{} points, more than the {MAX_POINTS} a polygon may have", points.len()));
    }
    for (i, p) in points.iter().enumerate() {
        if !(p.x.is_finite() && p.y.is_finite() && (0.0..=1.0).contains(&p.x) && (0.0..=1.0).contains(&p.y)) {
            return Err(format!("point {i} [{}, {}] is outside [0, 1]", p.x, p.y));
        }
    }
    let area = polygon_area(points);
    if area < MIN_AREA {
        return Err(format!(
            "its area is {area:.2e} of the frame: a degenerate polygon (points on a line or repeated) covers nothing"
        ));
    }
    Ok(())
}

/// Most points a polygon (privacy mask or zone) may have.
pub const MAX_POINTS: usize = 256;
/// Most polygons a privacy-mask file may hold.
pub const MAX_POLYGONS: usize = 64;
/// The smallest area a polygon may cover, as a fraction of the frame (a 1920x1080 frame: ~2 px²).
pub const MIN_AREA: f64 = 1e-6;

/// The area of a simple polygon in normalised units (shoelace formula).
pub fn polygon_area(points: &[NormPoint]) -> f64 {
    let n = points.len();
    let twice: f64 = (0..n)
        .map(|i| {
            let (a, b) = (points[i], points[(i + 1) % n]);
            a.x * b.y - b.x * a.y
        })
        .sum();
    twice.abs() / 2.0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaskFile {
    #[serde(default)]
    polygons: Vec<PolygonDef>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolygonDef {
    #[serde(default)]
    name: Option<String>,
    points: Vec<[f64; 2]>,
}

/// Pixels of guard band around each polygon in stored pixels (see [`PrivacyMask::stored_raster`]).
pub const STORED_GUARD_PX: u32 = 4;

/// A camera's privacy mask as loaded from its file: id (file stem), SHA-256 of the file bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyMask {
    pub id: String,
    pub path: PathBuf,
    pub sha256: String,
    pub polygons: Vec<Polygon>,
}

#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    /// `problem` names the file.
    #[error("privacy mask file {problem}")]
    Read { path: PathBuf, problem: String },
    #[error("privacy mask file {path}: {problem}")]
    Parse { path: PathBuf, problem: String },
    #[error("privacy mask file {path}: polygon {index} ({name}): {problem}")]
    Polygon { path: PathBuf, index: usize, name: String, problem: String },
}

impl PrivacyMask {
    pub fn load(path: &Path) -> Result<PrivacyMask, MaskError> {
        let bytes = crate::util::fsx::read_limited(path, crate::util::fsx::limits::MASK)
            .map_err(|e| MaskError::Read { path: path.into(), problem: format!("{e:#}") })?;
        let id = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        PrivacyMask::parse(&bytes, path, id)
    }

    /// Reads a mask from the bytes of a mask file, checked as [`PrivacyMask::load`] checks a file
    /// (the same code and messages; `origin` names where the bytes came from, a file or a KV key).
    /// The mask's `sha256` is that of `bytes`: saved to a file, the same bytes give the same hash.
    pub fn parse(bytes: &[u8], origin: &Path, id: String) -> Result<PrivacyMask, MaskError> {
        let path = origin;
        if bytes.len() as u64 > crate::util::fsx::limits::MASK {
            return Err(MaskError::Parse {
                path: path.into(),
                problem: format!(
                    "{} bytes, more than the {} a mask may have",
                    bytes.len(),
                    crate::util::fsx::limits::MASK
                ),
            });
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| MaskError::Parse { path: path.into(), problem: "not UTF-8 text".into() })?;
        let file: MaskFile = toml::from_str(text)
            .map_err(|e| MaskError::Parse { path: path.into(), problem: e.message().to_string() })?;
        if file.polygons.is_empty() {
            return Err(MaskError::Parse {
                path: path.into(),
                problem: "no polygons: a mask file must mask something; to run a camera without a mask on \
                          purpose, say privacy_mask = \"none\""
                    .into(),
            });
        }
        if file.polygons.len() > MAX_POLYGONS {
            return Err(MaskError::Parse {
                path: path.into(),
                problem: format!("{} polygons, more than the {MAX_POLYGONS} a mask may have", file.polygons.len()),
            });
        }
        let mut polygons = Vec::new();
        for (index, def) in file.polygons.into_iter().enumerate() {
            let name = def.name.unwrap_or_else(|| format!("#{index}"));
            let points: Vec<NormPoint> = def.points.iter().map(|p| NormPoint { x: p[0], y: p[1] }).collect();
            validate_polygon(&points).map_err(|problem| MaskError::Polygon {
                path: path.into(),
                index,
                name: name.clone(),
                problem,
            })?;
            polygons.push(Polygon { name, points });
        }
        Ok(PrivacyMask { id, path: path.into(), sha256: hex::encode(Sha256::digest(bytes)), polygons })
    }

    /// The mask file text of `polygons` (what the ops console saves; [`PrivacyMask::parse`] reads it
    /// back to the same polygons). Names are kept when they are labels, else dropped.
    pub fn file_text(polygons: &[Polygon], comment: &str) -> String {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            polygons: Vec<OutPolygon<'a>>,
        }
        #[derive(serde::Serialize)]
        struct OutPolygon<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            name: Option<&'a str>,
            points: Vec<[f64; 2]>,
        }
        let out = Out {
            polygons: polygons
                .iter()
                .map(|p| OutPolygon {
                    name: Some(p.name.as_str()).filter(|n| crate::util::check_label("name", n, 1, 64).is_ok()),
                    points: p.points.iter().map(|q| [q.x, q.y]).collect(),
                })
                .collect(),
        };
        let mut text: String = comment.lines().map(|l| format!("# {l}\n")).collect();
        text.push_str(&toml::to_string(&out).unwrap_or_default());
        text
    }

    /// What the ops console and audit records show of a mask: id, hash and polygons.
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "sha256": self.sha256,
            "polygons": self.polygons.iter().map(|p| serde_json::json!({
                "name": p.name,
                "points": p.points.iter().map(|q| [q.x, q.y]).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }

    /// Rasterises the mask for one frame size. Done once per size, then applied per frame.
    pub fn raster(&self, width: u32, height: u32) -> MaskRaster {
        MaskRaster::new(&self.polygons, width, height)
    }

    /// The raster burnt into stored pixels (clip frames, snapshots): the polygons plus a guard band
    /// of [`STORED_GUARD_PX`] (scaled with the frame: at least that, 1/320 of the width).
    pub fn stored_raster(&self, width: u32, height: u32) -> MaskRaster {
        self.raster(width, height).dilated(STORED_GUARD_PX.max(width / 320))
    }
}

/// A mask rasterised for one frame size: per row, sorted disjoint pixel spans to black out.
#[derive(Debug, Clone)]
pub struct MaskRaster {
    pub width: u32,
    pub height: u32,
    rows: Vec<Vec<(u32, u32)>>,
}

impl MaskRaster {
    pub fn new(polygons: &[Polygon], width: u32, height: u32) -> MaskRaster {
        let mut rows = Vec::with_capacity(height as usize);
        let mut spans = Vec::new();
        for y in 0..height {
            spans.clear();
            for p in polygons {
                p.row_spans(y, width, height, &mut spans);
            }
            rows.push(merge_spans(&mut spans));
        }
        MaskRaster { width, height, rows }
    }

    /// The mask grown by `r` pixels in every direction (a square structuring element): what is
    /// burnt into stored pixels, so that lossy coding (4:2:0 chroma, the deblocking filter,
    /// transform ringing) cannot bleed picture into the polygons themselves.
    pub fn dilated(&self, r: u32) -> MaskRaster {
        let h = self.rows.len();
        let mut rows = Vec::with_capacity(h);
        let mut spans: Vec<(u32, u32)> = Vec::new();
        for y in 0..h {
            spans.clear();
            let (lo, hi) = (y.saturating_sub(r as usize), (y + r as usize).min(h.saturating_sub(1)));
            for row in &self.rows[lo..=hi.max(lo).min(h.saturating_sub(1))] {
                spans.extend(row.iter().map(|&(a, b)| (a.saturating_sub(r), (b + r).min(self.width))));
            }
            rows.push(merge_spans(&mut spans));
        }
        MaskRaster { width: self.width, height: self.height, rows }
    }

    /// True when no pixel is masked.
    pub fn is_empty(&self) -> bool {
        self.rows.iter().all(Vec::is_empty)
    }

    pub fn covers(&self, x: u32, y: u32) -> bool {
        self.rows.get(y as usize).is_some_and(|r| r.iter().any(|&(a, b)| x >= a && x < b))
    }

    /// Blacks out masked pixels of a packed RGB image (`stride` bytes per row).
    pub fn apply_rgb(&self, data: &mut [u8], stride: usize) {
        for (y, spans) in self.rows.iter().enumerate() {
            let row = &mut data[y * stride..];
            for &(a, b) in spans {
                row[a as usize * 3..b as usize * 3].fill(0);
            }
        }
    }
}

/// Sorts pixel spans `[a, b)` of a row and merges the overlapping ones.
fn merge_spans(spans: &mut [(u32, u32)]) -> Vec<(u32, u32)> {
    spans.sort_unstable();
    let mut merged: Vec<(u32, u32)> = Vec::new();
    for &(a, b) in spans.iter() {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x0: f64, y0: f64, x1: f64, y1: f64) -> Polygon {
        Polygon {
            name: "sq".into(),
            points: vec![
                NormPoint { x: x0, y: y0 },
                NormPoint { x: x1, y: y0 },
                NormPoint { x: x1, y: y1 },
                NormPoint { x: x0, y: y1 },
            ],
        }
    }

    #[test]
    fn raster_covers_exactly_the_square() {
        let r = MaskRaster::new(&[square(0.25, 0.5, 0.75, 1.0)], 8, 4);
        for y in 0..4 {
            for x in 0..8 {
                assert_eq!(r.covers(x, y), (2..6).contains(&x) && y >= 2, "pixel {x},{y}");
            }
        }
        let mut img = vec![255u8; 8 * 4 * 3];
        r.apply_rgb(&mut img, 24);
        assert_eq!(img.iter().filter(|&&v| v == 0).count(), 4 * 2 * 3);
    }

    #[test]
    fn dilation_grows_the_mask_by_r_pixels_each_way() {
        let r = MaskRaster::new(&[square(0.4, 0.4, 0.6, 0.6)], 100, 100).dilated(3);
        assert!(r.covers(37, 37) && r.covers(62, 62) && !r.covers(36, 50) && !r.covers(50, 63));
        let edge = MaskRaster::new(&[square(0.0, 0.0, 0.1, 0.1)], 100, 100).dilated(5);
        assert!(edge.covers(0, 0) && edge.covers(14, 14) && !edge.covers(15, 0));
    }

    #[test]
    fn overlapping_polygons_merge_and_triangle_contains() {
        let r = MaskRaster::new(&[square(0.0, 0.0, 0.5, 1.0), square(0.25, 0.0, 0.75, 1.0)], 100, 10);
        assert!(r.covers(0, 5) && r.covers(74, 5) && !r.covers(75, 5));
        let tri = Polygon {
            name: "t".into(),
            points: vec![NormPoint { x: 0.0, y: 0.0 }, NormPoint { x: 1.0, y: 0.0 }, NormPoint { x: 0.0, y: 1.0 }],
        };
        assert!(tri.contains(0.2, 0.2));
        assert!(!tri.contains(0.8, 0.8));
    }

    #[test]
    fn invalid_polygons_name_file_and_polygon() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("cam.toml");
        std::fs::write(&p, "[[polygons]]\nname = \"door\"\npoints = [[0,0],[1.2,0],[1,1]]\n").unwrap();
        let e = PrivacyMask::load(&p).unwrap_err().to_string();
        assert!(e.contains("cam.toml") && e.contains("door") && e.contains("outside [0, 1]"), "{e}");
        std::fs::write(&p, "[[polygons]]\npoints = [[0,0],[1,0]]\n").unwrap();
        let e = PrivacyMask::load(&p).unwrap_err().to_string();
        assert!(e.contains("polygon 0") && e.contains("at least 3 points"), "{e}");
        let e = PrivacyMask::load(&d.path().join("missing.toml")).unwrap_err().to_string();
        assert!(e.contains("missing.toml") && e.contains("cannot open"), "{e}");
        // an empty file, no polygons, a polygon with no area: each an error naming file and polygon
        for (text, needle) in [
            ("", "no polygons"),
            ("polygons = []\n", "no polygons"),
            ("[[polygons]]\nname = \"line\"\npoints = [[0,0],[0.5,0.5],[1,1]]\n", "line) : its area"),
            ("[[polygons]]\nname = \"dot\"\npoints = [[0.3,0.3],[0.3,0.3],[0.3,0.3]]\n", "degenerate"),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = PrivacyMask::load(&p).unwrap_err().to_string();
            assert!(e.contains("cam.toml") && e.contains(needle.replace(") : ", "): ").as_str()), "{text:?}: {e}");
        }
        std::fs::write(&p, "[[polygons]]\npoints = [[0,0],[0.002,0],[0,0.002]]\n").unwrap();
        assert!(PrivacyMask::load(&p).is_ok(), "a small polygon with an area is fine");
        // not a regular file
        let e = PrivacyMask::load(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("/dev/zero") && e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn file_text_reads_back_to_the_same_polygons_and_its_bytes_are_what_the_hash_covers() {
        let polys = vec![
            square(0.1, 0.2, 0.3, 0.4),
            Polygon { name: "bad \"name\"\n".into(), points: square(0.5, 0.5, 0.6, 0.6).points },
        ];
        let text = PrivacyMask::file_text(&polys, "saved by olga");
        assert!(text.starts_with("# saved by olga\n"), "{text}");
        let m = PrivacyMask::parse(text.as_bytes(), Path::new("kv"), "kv".into()).unwrap();
        assert_eq!(m.polygons[0], polys[0]);
        assert_eq!(m.polygons[1].points, polys[1].points);
        assert_eq!(m.polygons[1].name, "#1", "a name that is not a label is dropped");
        assert_eq!(m.sha256, crate::util::sha256_hex(text.as_bytes()));
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("cam.toml"), &text).unwrap();
        assert_eq!(
            PrivacyMask::load(&d.path().join("cam.toml")).unwrap().sha256,
            m.sha256,
            "saved as a file: the same hash"
        );
    }
}
