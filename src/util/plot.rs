//! Line plots (precision/recall curves, benchmark scaling) drawn with `plotters`, as SVG and PNG.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

/// A named line: (name, points).
pub type Series = (String, Vec<(f64, f64)>);

/// A plot of named lines over one x axis, with one or two y axes.
#[derive(Debug, Clone, Default)]
pub struct Plot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_range: (f64, f64),
    pub y_range: (f64, f64),
    /// (name, points) on the left axis.
    pub series: Vec<Series>,
    /// A shaded target region (x0, x1, y0, y1), e.g. precision ≥ 0.9 at recall ≥ 0.8.
    pub target: Option<(f64, f64, f64, f64)>,
    /// A second y axis on the right: (label, range, series).
    pub right: Option<(String, (f64, f64), Vec<Series>)>,
    /// Marked points (x, y, label) on the left axis, e.g. the threshold in force.
    pub marks: Vec<(f64, f64, String)>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("plot: {e:?}")
}

impl Plot {
    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(err)?;
        let mut b = ChartBuilder::on(&root);
        b.caption(&self.title, ("sans-serif", 16)).margin(12).x_label_area_size(40).y_label_area_size(50);
        if self.right.is_some() {
            b.right_y_label_area_size(55);
        }
        let mut chart = b
            .build_cartesian_2d(self.x_range.0..self.x_range.1, self.y_range.0..self.y_range.1)
            .map_err(err)?
            .set_secondary_coord(
                self.x_range.0..self.x_range.1,
                self.right.as_ref().map_or(0.0..1.0, |r| (r.1).0..(r.1).1),
            );
        chart
            .configure_mesh()
            .x_desc(self.x_label.as_str())
            .y_desc(self.y_label.as_str())
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(err)?;
        if let Some((x0, x1, y0, y1)) = self.target {
            chart
                .draw_series(std::iter::once(Rectangle::new([(x0, y0), (x1, y1)], GREEN.mix(0.12).filled())))
                .map_err(err)?;
        }
        for (i, (name, pts)) in self.series.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
        }
        for (x, y, label) in &self.marks {
            chart.draw_series(std::iter::once(Circle::new((*x, *y), 5, BLACK.filled()))).map_err(err)?;
            chart.draw_series(std::iter::once(Text::new(label.clone(), (*x, *y), ("sans-serif", 12)))).map_err(err)?;
        }
        if let Some((label, _, series)) = &self.right {
            chart.configure_secondary_axes().y_desc(label.as_str()).draw().map_err(err)?;
            for (i, (name, pts)) in series.iter().enumerate() {
                let c = COLORS[(self.series.len() + i) % COLORS.len()];
                chart
                    .draw_secondary_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                    .map_err(err)?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
        Ok(())
    }

    /// The plot as SVG text.
    pub fn svg(&self, size: (u32, u32)) -> Result<String> {
        let mut s = String::new();
        self.draw(SVGBackend::with_string(&mut s, size).into_drawing_area())?;
        Ok(s)
    }

    /// Writes `<stem>.svg` and `<stem>.png` beside each other.
    pub fn write(&self, stem: &Path, size: (u32, u32)) -> Result<()> {
        std::fs::write(stem.with_extension("svg"), self.svg(size)?)?;
        let png = stem.with_extension("png");
        self.draw(BitMapBackend::new(&png, size).into_drawing_area())?;
        Ok(())
    }
}
