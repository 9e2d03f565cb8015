//! Plots of `bsa bench`, drawn with plotters as SVG (text needs no font files) and rendered to
//! PNG with resvg when the system has a font for the text.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Tableau's ten categorical colours: distinct at a glance (plotters' `Palette99` puts
/// yellow and yellow-green next to each other), then repeated.
const PALETTE: [(u8, u8, u8); 10] = [
    (0x4e, 0x79, 0xa7),
    (0xf2, 0x8e, 0x2b),
    (0xe1, 0x57, 0x59),
    (0x76, 0xb7, 0xb2),
    (0x59, 0xa1, 0x4f),
    (0xed, 0xc9, 0x48),
    (0xb0, 0x7a, 0xa1),
    (0xff, 0x9d, 0xa7),
    (0x9c, 0x75, 0x5f),
    (0x55, 0x55, 0x55),
];

fn pick(i: usize) -> plotters::style::RGBAColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    use plotters::style::Color;
    plotters::style::RGBColor(r, g, b).to_rgba()
}

/// One series of a [`chart`].
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text; empty: no legend row (a series drawn in the colour of a labelled one).
    pub label: String,
    /// The points, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// Palette index (series of one method share it).
    pub color: usize,
    /// Filled markers (else hollow).
    pub filled: bool,
    /// Join the points with a line (None: the chart's default).
    pub joined: Option<bool>,
    /// Draw crosses instead of circles (to set apart single measurements from sweeps).
    pub crosses: bool,
}

impl Series {
    /// A filled series with its own colour `color`.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>, color: usize) -> Self {
        Series {
            label: label.into(),
            points,
            color,
            filled: true,
            joined: None,
            crosses: false,
        }
    }

    /// The same series drawn with crosses.
    pub fn crosses(mut self) -> Self {
        self.crosses = true;
        self
    }

    /// The same series with hollow markers.
    pub fn hollow(mut self) -> Self {
        self.filled = false;
        self
    }

    /// The same series, joined by a line or not whatever the chart's default.
    pub fn joined(mut self, yes: bool) -> Self {
        self.joined = Some(yes);
        self
    }
}

/// How [`chart`] draws its series: points joined by lines or markers only (a series may say
/// otherwise, [`Series::joined`]), x on a log2 scale, y over a fixed range.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Points joined by lines unless a series says otherwise (else markers only).
    pub lines: bool,
    /// The x values are log2 of the labelled quantity (the ticks show the quantity).
    pub log2_x: bool,
    /// The y axis's range; `None` fits it to the points.
    pub y_range: Option<(f64, f64)>,
}

impl Style {
    /// Points joined by lines, linear axes, y fitted to the points.
    pub fn lines() -> Self {
        Style {
            lines: true,
            log2_x: false,
            y_range: None,
        }
    }

    /// Markers only, linear axes, y fitted to the points.
    pub fn markers() -> Self {
        Style {
            lines: false,
            ..Style::lines()
        }
    }

    /// The same with x values that are log2 of the labelled quantity.
    pub fn log2_x(self) -> Self {
        Style {
            log2_x: true,
            ..self
        }
    }

    /// The same with y from 0 to 1 (recall, fractions).
    pub fn unit_y(self) -> Self {
        Style {
            y_range: Some((0.0, 1.0)),
            ..self
        }
    }
}

/// Draws `series` as an SVG chart with labelled axes, a title and a legend (to the right of the
/// plot, so that it never hides points), as `style` says.
pub fn chart(
    path: &Path,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series],
    style: Style,
) -> Result<()> {
    use plotters::prelude::*;
    let Style {
        lines,
        log2_x,
        y_range,
    } = style;
    let err = |e: String| Error::io(path, std::io::Error::other(e));
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in series.iter().flat_map(|s| s.points.iter()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if let Some((a, b)) = y_range {
        (y0, y1) = (a, b);
    }
    // 5% margins; a single value gets a range around it.
    let pad = |a: f64, b: f64| {
        let w = if b - a > 1e-9 {
            (b - a) * 0.05
        } else {
            (a.abs() * 0.25).max(1.0)
        };
        (a - w, b + w)
    };
    let (x0, x1) = pad(x0, x1);
    let (y0, y1) = pad(y0, y1);
    let root = SVGBackend::new(path, (1200, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let (plot, legend) = root.split_horizontally(860);
    let mut c = ChartBuilder::on(&plot)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(e.to_string()))?;
    let digits = if x1 - x0 > 10.0 { 0 } else { 1 };
    let fmt_x = |x: &f64| {
        if log2_x {
            format!("{:.digits$}", 2f64.powf(*x))
        } else {
            format!("{x:.digits$}")
        }
    };
    c.configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&fmt_x)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let style = |s: &Series| {
        let color = pick(s.color);
        if s.filled {
            color.filled()
        } else {
            color.stroke_width(2)
        }
    };
    for s in series {
        let st = style(s);
        let joined = s.joined.unwrap_or(lines);
        if joined {
            c.draw_series(LineSeries::new(
                s.points.iter().copied(),
                st.color.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?;
        }
        // Markers only where they stay readable.
        if s.crosses {
            c.draw_series(
                s.points
                    .iter()
                    .map(|&xy| Cross::new(xy, 6, st.color.stroke_width(3))),
            )
            .map_err(|e| err(e.to_string()))?;
        } else if !joined || s.points.len() <= 64 {
            c.draw_series(s.points.iter().map(|&xy| Circle::new(xy, 4, st)))
                .map_err(|e| err(e.to_string()))?;
        }
    }
    // Series with an empty label share the legend row of a labelled one.
    for (i, s) in series.iter().filter(|s| !s.label.is_empty()).enumerate() {
        let y = 60 + 22 * i as i32;
        if s.crosses {
            legend
                .draw(&Cross::new((12, y), 6, style(s).color.stroke_width(3)))
                .map_err(|e| err(e.to_string()))?;
        } else {
            legend
                .draw(&Circle::new((12, y), 5, style(s)))
                .map_err(|e| err(e.to_string()))?;
        }
        legend
            .draw(&Text::new(s.label.clone(), (24, y - 7), ("sans-serif", 14)))
            .map_err(|e| err(e.to_string()))?;
    }
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// A histogram (bars) of `(x, count)` pairs as SVG.
pub fn histogram(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    bars: &[(f64, f64)],
) -> Result<()> {
    use plotters::prelude::*;
    let err = |e: String| Error::io(path, std::io::Error::other(e));
    let x0 = bars.iter().map(|b| b.0).fold(f64::INFINITY, f64::min);
    let x1 = bars.iter().map(|b| b.0).fold(f64::NEG_INFINITY, f64::max);
    let y1 = bars.iter().map(|b| b.1).fold(0.0, f64::max);
    let (x0, x1) = if x0.is_finite() {
        (x0 - 1.0, x1 + 1.0)
    } else {
        (0.0, 1.0)
    };
    let root = SVGBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(x0..x1, 0.0..(y1 * 1.05).max(1.0))
        .map_err(|e| err(e.to_string()))?;
    c.configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    let color = pick(0);
    c.draw_series(
        bars.iter()
            .map(|&(x, y)| Rectangle::new([(x - 0.4, 0.0), (x + 0.4, y)], color.filled())),
    )
    .map_err(|e| err(e.to_string()))?
    .label(y_label)
    .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 10, y + 4)], color.filled()));
    c.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Renders the SVG file `svg` to a PNG file beside it (same name, `.png`) at twice the SVG's
/// size. Returns `Ok(None)`, and writes nothing, when the system has no font to draw the text
/// with (Debian: `apt-get install fonts-dejavu-core`): a PNG without its labels would mislead.
pub fn to_png(svg: &Path) -> Result<Option<PathBuf>> {
    use resvg::{tiny_skia, usvg};
    let mut opt = usvg::Options::default();
    let db = opt.fontdb_mut();
    db.load_system_fonts();
    // plotters writes `font-family="sans-serif"`; fontdb maps that to Arial unless told.
    let known = [
        "DejaVu Sans",
        "Liberation Sans",
        "Noto Sans",
        "Arial",
        "FreeSans",
    ];
    let family = known
        .iter()
        .find(|f| {
            db.faces()
                .any(|face| face.families.iter().any(|(name, _)| name == *f))
        })
        .map(|f| f.to_string())
        .or_else(|| {
            db.faces()
                .next()
                .and_then(|f| f.families.first().map(|x| x.0.clone()))
        });
    let Some(family) = family else {
        return Ok(None);
    };
    db.set_sans_serif_family(family.clone());
    opt.font_family = family;
    let data = std::fs::read(svg).map_err(|e| Error::io(svg, e))?;
    let bad = |what: String| Error::Format {
        path: svg.to_path_buf(),
        detail: what,
    };
    let tree =
        usvg::Tree::from_data(&data, &opt).map_err(|e| bad(format!("not a valid SVG: {e}")))?;
    let size = tree
        .size()
        .to_int_size()
        .scale_by(2.0)
        .ok_or_else(|| bad("empty picture".into()))?;
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height())
        .ok_or_else(|| bad("empty picture".into()))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(
        &tree,
        tiny_skia::Transform::from_scale(2.0, 2.0),
        &mut pixmap.as_mut(),
    );
    let png = svg.with_extension("png");
    let bytes = pixmap
        .encode_png()
        .map_err(|e| Error::io(&png, std::io::Error::other(e.to_string())))?;
    std::fs::write(&png, bytes).map_err(|e| Error::io(&png, e))?;
    Ok(Some(png))
}
