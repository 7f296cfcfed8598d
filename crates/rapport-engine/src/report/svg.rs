//! Charts as inline SVG: the report opens offline, in any browser, with no script.

use std::fmt::Write;

pub const PALETTE: &[&str] = &[
    "#2b6cb0", "#c05621", "#9b2c2c", "#2f855a", "#6b46c1", "#b7791f", "#2c7a7b", "#97266d",
];

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub fn number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        let s = format!("{}", x as i64);
        let neg = s.starts_with('-');
        let digits: Vec<char> = s.trim_start_matches('-').chars().collect();
        let mut out = String::new();
        for (i, c) in digits.iter().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(*c);
        }
        if neg {
            format!("-{out}")
        } else {
            out
        }
    } else if x.abs() < 1.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.1}")
    }
}

/// The opening tag of a chart of `width` × `height` and its title.
fn open(id: &str, title: &str, width: f64, height: f64) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" data-chart="{}" role="img" aria-label="{}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">"#,
        escape(id),
        escape(title)
    );
    let _ = write!(s, r#"<text x="0" y="16" class="title">{}</text>"#, escape(title));
    s
}

/// The legend entry of series `i` at `x`: a swatch of its colour and its name.
fn legend(s: &mut String, x: f64, i: usize, name: &str) {
    let _ = write!(
        s,
        r#"<rect x="{x}" y="26" width="10" height="10" fill="{}"/><text x="{}" y="35" class="legend">{}</text>"#,
        PALETTE[i % PALETTE.len()],
        x + 14.0,
        escape(name)
    );
}

/// A row label right-aligned to `x`, on the baseline `y`.
fn row_label(s: &mut String, x: f64, y: f64, label: &str) {
    let _ = write!(
        s,
        r#"<text x="{x}" y="{y}" class="label" text-anchor="end">{}</text>"#,
        escape(label)
    );
}

/// The height of a row of a [`BarChart`].
const BAR_ROW: f64 = 24.0;

/// A horizontal bar chart; each row has one value per series (stacked).
pub struct BarChart<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub series: &'a [&'a str],
    pub rows: Vec<(String, Vec<f64>)>,
    /// Formats the total shown at the end of each bar.
    pub unit: &'a str,
}

impl BarChart<'_> {
    pub fn render(&self) -> String {
        let longest = self.rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0) as f64;
        let label_w = (7.0 * longest + 16.0).clamp(230.0, 420.0);
        let bar_w = 420.0;
        let row_h = BAR_ROW;
        let top = if self.series.len() > 1 { 46.0 } else { 30.0 };
        let height = top + row_h * self.rows.len().max(1) as f64 + 10.0;
        let width = label_w + bar_w + 110.0;
        let max = self.rows.iter().map(|(_, v)| v.iter().sum::<f64>()).fold(0.0, f64::max).max(1e-9);
        let mut s = open(self.id, self.title, width, height);
        if self.series.len() > 1 {
            let mut x = label_w;
            for (i, name) in self.series.iter().enumerate() {
                legend(&mut s, x, i, name);
                x += 24.0 + 7.0 * name.len() as f64;
            }
        }
        if self.rows.is_empty() {
            let _ = write!(s, r#"<text x="{label_w}" y="{}" class="empty">nothing to show</text>"#, top + 16.0);
        }
        for (r, (label, values)) in self.rows.iter().enumerate() {
            let y = top + row_h * r as f64;
            row_label(&mut s, label_w - 8.0, y + 16.0, label);
            self.bar(&mut s, (label_w, y), (bar_w, max), values);
        }
        s.push_str("</svg>");
        s
    }

    /// One stacked bar from `(x, y)`, `max` taking `bar_w` pixels, and its total.
    fn bar(&self, s: &mut String, (mut x, y): (f64, f64), (bar_w, max): (f64, f64), values: &[f64]) {
        let row_h = BAR_ROW;
        for (i, v) in values.iter().enumerate() {
            let w = bar_w * v / max;
            if w > 0.0 {
                let _ = write!(
                    s,
                    r#"<rect x="{x:.1}" y="{}" width="{w:.1}" height="{}" fill="{}"><title>{}: {}</title></rect>"#,
                    y + 4.0,
                    row_h - 8.0,
                    PALETTE[i % PALETTE.len()],
                    escape(self.series.get(i).copied().unwrap_or("")),
                    number(*v)
                );
            }
            x += w;
        }
        let total: f64 = values.iter().sum();
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{}" class="value">{}{}</text>"#,
            x + 6.0,
            y + 16.0,
            number(total),
            escape(self.unit)
        );
    }
}

/// A matrix of values as coloured cells (darker = larger), with the value in each cell.
pub struct Heatmap<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub x_title: &'a str,
    pub y_title: &'a str,
    pub columns: Vec<String>,
    pub rows: Vec<String>,
    /// `values[row][column]`; `None` draws an empty cell.
    pub values: Vec<Vec<Option<f64>>>,
}

impl Heatmap<'_> {
    pub fn render(&self) -> String {
        let (left, top, cw, ch) = (150.0, 48.0, 86.0, 30.0);
        let width = left + cw * self.columns.len().max(1) as f64 + 20.0;
        let height = top + ch * self.rows.len().max(1) as f64 + 40.0;
        let max = self
            .values
            .iter()
            .flatten()
            .flatten()
            .fold(0.0f64, |m, v| m.max(v.abs()))
            .max(1e-12);
        let mut s = open(self.id, self.title, width, height);
        let _ = write!(s, r#"<text x="{left}" y="34" class="legend">{} →</text>"#, escape(self.x_title));
        let _ = write!(
            s,
            r#"<text x="0" y="{}" class="legend">{} ↓</text>"#,
            top - 4.0,
            escape(self.y_title)
        );
        for (c, name) in self.columns.iter().enumerate() {
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" class="label" text-anchor="middle">{}</text>"#,
                left + cw * (c as f64 + 0.5),
                top + ch * self.rows.len() as f64 + 16.0,
                escape(name)
            );
        }
        for (r, name) in self.rows.iter().enumerate() {
            let y = top + ch * r as f64;
            row_label(&mut s, left - 8.0, y + 19.0, name);
            for c in 0..self.columns.len() {
                let x = left + cw * c as f64;
                let v = self.values.get(r).and_then(|row| row.get(c)).copied().flatten();
                let title = || format!("{} / {}", escape(name), escape(&self.columns[c]));
                heat_cell(&mut s, (x, y), (cw, ch), v.map(|v| (v, v.abs() / max)), title);
            }
        }
        s.push_str("</svg>");
        s
    }
}

/// One cell of a heatmap at `(x, y)` of size `(cw, ch)`: `value` with its share `t` of
/// the largest (the darkness) and the cell's tooltip, or an empty cell.
fn heat_cell(s: &mut String, (x, y): (f64, f64), (cw, ch): (f64, f64), value: Option<(f64, f64)>, title: impl Fn() -> String) {
    let Some((v, t)) = value else {
        let _ = write!(
            s,
            r##"<rect x="{x}" y="{y}" width="{}" height="{}" fill="#f7fafc"/>"##,
            cw - 2.0,
            ch - 2.0
        );
        return;
    };
    let t = t.clamp(0.0, 1.0);
    // From #ebf4ff to #1a365d.
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    let fill = format!("#{:02x}{:02x}{:02x}", mix(235.0, 26.0), mix(244.0, 54.0), mix(255.0, 93.0));
    let text = if t > 0.55 { "#ffffff" } else { "#1a202c" };
    let _ = write!(
        s,
        r#"<rect x="{x}" y="{y}" width="{}" height="{}" fill="{fill}"><title>{}: {}</title></rect><text x="{}" y="{}" class="cell" fill="{text}" text-anchor="middle">{}</text>"#,
        cw - 2.0,
        ch - 2.0,
        title(),
        number(v),
        x + cw / 2.0,
        y + 19.0,
        number(v)
    );
}

/// One line of a [`LineChart`], with an optional band (lower, upper) per point.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub band: Option<Vec<(f64, f64, f64)>>,
    pub dashed: bool,
}

/// Lines over a shared x axis (numbers; `x_ticks` label chosen positions).
pub struct LineChart<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub x_title: &'a str,
    pub y_title: &'a str,
    pub lines: Vec<Line>,
    pub x_ticks: Vec<(f64, String)>,
    /// Draw the y = x diagonal (ROC and calibration curves).
    pub diagonal: bool,
}

/// Where the values of a line chart land: the plot's box in pixels and the ranges of x
/// and y it shows.
struct Frame {
    left: f64,
    top: f64,
    w: f64,
    h: f64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        self.left + (x - self.x.0) / (self.x.1 - self.x.0) * self.w
    }

    fn py(&self, y: f64) -> f64 {
        self.top + self.h - (y - self.y.0) / (self.y.1 - self.y.0) * self.h
    }
}

impl LineChart<'_> {
    pub fn render(&self) -> String {
        let f = self.frame();
        let width = f.left + f.w + 30.0;
        let height = f.top + f.h + 50.0;
        let mut s = open(self.id, self.title, width, height);
        let mut lx = f.left;
        for (i, l) in self.lines.iter().enumerate() {
            legend(&mut s, lx, i, &l.name);
            lx += 30.0 + 7.0 * l.name.len() as f64;
        }
        self.axes(&mut s, &f);
        if self.diagonal {
            let _ = write!(
                s,
                r##"<path d="M{} {} L{} {}" stroke="#a0aec0" stroke-dasharray="4 4" fill="none"/>"##,
                f.px(0.0),
                f.py(0.0),
                f.px(1.0),
                f.py(1.0)
            );
        }
        for (i, l) in self.lines.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            if let Some(band) = &l.band {
                band_path(&mut s, &f, band, colour);
            }
            line_path(&mut s, &f, l, colour);
        }
        s.push_str("</svg>");
        s
    }

    /// The ranges that hold every finite point and band (0–1 on both axes for a chart
    /// with the diagonal or nothing to show; y from 0 at most).
    fn frame(&self) -> Frame {
        let all = || {
            self.lines.iter().flat_map(|l| {
                l.points
                    .iter()
                    .map(|p| (p.0, p.1, p.1))
                    .chain(l.band.iter().flatten().copied())
                    .collect::<Vec<_>>()
            })
        };
        let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for (x, lo, hi) in all() {
            if x.is_finite() && lo.is_finite() && hi.is_finite() {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(lo);
                y1 = y1.max(hi);
            }
        }
        if self.diagonal || !x0.is_finite() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        y0 = y0.min(0.0);
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if y1 <= y0 {
            y1 = y0 + 1.0;
        }
        Frame {
            left: 70.0,
            top: 64.0,
            w: 600.0,
            h: 260.0,
            x: (x0, x1),
            y: (y0, y1),
        }
    }

    /// The axes, five y ticks with grid lines, the x ticks and both axis titles.
    fn axes(&self, s: &mut String, f: &Frame) {
        let (left, top, w, h) = (f.left, f.top, f.w, f.h);
        let _ = write!(
            s,
            r##"<path d="M{left} {top} V{} H{}" stroke="#a0aec0" fill="none"/>"##,
            top + h,
            left + w
        );
        let (y0, y1) = f.y;
        for k in 0..=4 {
            let v = y0 + (y1 - y0) * f64::from(k) / 4.0;
            let _ = write!(
                s,
                r##"<text x="{}" y="{}" class="label" text-anchor="end">{}</text><path d="M{left} {} H{}" stroke="#edf2f7"/>"##,
                left - 6.0,
                f.py(v) + 4.0,
                number(if v.abs() >= 10.0 { v.round() } else { (v * 100.0).round() / 100.0 }),
                f.py(v),
                left + w
            );
        }
        for (x, label) in &self.x_ticks {
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" class="label" text-anchor="middle">{}</text>"#,
                f.px(*x),
                top + h + 16.0,
                escape(label)
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" class="legend" text-anchor="middle">{}</text>"#,
            left + w / 2.0,
            top + h + 36.0,
            escape(self.x_title)
        );
        let _ = write!(
            s,
            r#"<text x="{left}" y="{}" class="legend" text-anchor="middle">{}</text>"#,
            top - 8.0,
            escape(self.y_title)
        );
    }
}

/// A shaded band from the lower to the upper value of each finite point.
fn band_path(s: &mut String, f: &Frame, band: &[(f64, f64, f64)], colour: &str) {
    let pts: Vec<&(f64, f64, f64)> = band
        .iter()
        .filter(|b| b.0.is_finite() && b.1.is_finite() && b.2.is_finite())
        .collect();
    if pts.is_empty() {
        return;
    }
    let mut d = String::new();
    for (k, b) in pts.iter().enumerate() {
        let _ = write!(d, "{}{:.1} {:.1} ", if k == 0 { "M" } else { "L" }, f.px(b.0), f.py(b.2));
    }
    for b in pts.iter().rev() {
        let _ = write!(d, "L{:.1} {:.1} ", f.px(b.0), f.py(b.1));
    }
    let _ = write!(
        s,
        r#"<path class="band" d="{d}Z" fill="{colour}" fill-opacity="0.15" stroke="none"/>"#
    );
}

/// The line through the finite points of `l`, named in its tooltip.
fn line_path(s: &mut String, f: &Frame, l: &Line, colour: &str) {
    let mut d = String::new();
    for (k, p) in l.points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).enumerate() {
        let _ = write!(d, "{}{:.1} {:.1} ", if k == 0 { "M" } else { "L" }, f.px(p.0), f.py(p.1));
    }
    if d.is_empty() {
        return;
    }
    let dash = if l.dashed { r#" stroke-dasharray="6 3""# } else { "" };
    let _ = write!(
        s,
        r#"<path class="line" d="{}" stroke="{colour}" stroke-width="2" fill="none"{dash}><title>{}</title></path>"#,
        d.trim_end(),
        escape(&l.name)
    );
}

/// Estimates with intervals on one horizontal axis (a forest plot), with a zero line;
/// an interval wholly above zero is drawn green, wholly below red, otherwise grey.
pub struct IntervalChart<'a> {
    pub id: &'a str,
    pub title: &'a str,
    /// (label, estimate, low, high).
    pub rows: Vec<(String, f64, f64, f64)>,
    /// Multiplies values for display (100 for percentage points).
    pub scale: f64,
    pub unit: &'a str,
}

impl IntervalChart<'_> {
    pub fn render(&self) -> String {
        let longest = self.rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0) as f64;
        let label_w = (7.0 * longest + 16.0).clamp(200.0, 420.0);
        let plot_w = 420.0;
        let row_h = 26.0;
        let top = 44.0;
        let height = top + row_h * self.rows.len().max(1) as f64 + 24.0;
        let width = label_w + plot_w + 200.0;
        let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
        let lo = self.rows.iter().flat_map(|r| [r.2, r.1]).map(finite).fold(0.0, f64::min);
        let hi = self.rows.iter().flat_map(|r| [r.3, r.1]).map(finite).fold(0.0, f64::max);
        let span = (hi - lo).max(1e-9);
        let x_of = |v: f64| label_w + plot_w * (finite(v) - lo) / span;
        let mut s = open(self.id, self.title, width, height);
        let _ = write!(
            s,
            r#"<text x="{label_w}" y="34" class="legend">● estimate with 95 % interval</text>"#
        );
        let zx = x_of(0.0);
        let _ = write!(
            s,
            r##"<line x1="{zx:.1}" y1="{top}" x2="{zx:.1}" y2="{:.1}" stroke="#718096" stroke-dasharray="4 3"/>"##,
            height - 20.0
        );
        let _ = write!(
            s,
            r#"<text x="{zx:.1}" y="{:.1}" class="legend" text-anchor="middle">0</text>"#,
            height - 6.0
        );
        if self.rows.is_empty() {
            let _ = write!(s, r#"<text x="{label_w}" y="{}" class="empty">nothing to show</text>"#, top + 16.0);
        }
        for (r, row) in self.rows.iter().enumerate() {
            let y = top + row_h * r as f64 + 13.0;
            row_label(&mut s, label_w - 8.0, y + 4.0, &row.0);
            self.interval(&mut s, y, row, &x_of);
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" class="value">{:+.1}{} [{:+.1}, {:+.1}]</text>"#,
                label_w + plot_w + 10.0,
                y + 4.0,
                row.1 * self.scale,
                escape(self.unit),
                row.2 * self.scale,
                row.3 * self.scale
            );
        }
        s.push_str("</svg>");
        s
    }

    /// The interval and estimate of `row` on the line at `y`, coloured by which side
    /// of zero the interval lies, the figures in its tooltip.
    fn interval(&self, s: &mut String, y: f64, (label, est, l, h): &(String, f64, f64, f64), x_of: &impl Fn(f64) -> f64) {
        let colour = if *l > 0.0 {
            "#2f855a"
        } else if *h < 0.0 {
            "#9b2c2c"
        } else {
            "#718096"
        };
        let _ = write!(
            s,
            r#"<line x1="{:.1}" y1="{y}" x2="{:.1}" y2="{y}" stroke="{colour}" stroke-width="3"/><circle cx="{:.1}" cy="{y}" r="5" fill="{colour}"><title>{}: {:.2}{} [{:.2}, {:.2}]</title></circle>"#,
            x_of(*l),
            x_of(*h),
            x_of(*est),
            escape(label),
            est * self.scale,
            escape(self.unit),
            l * self.scale,
            h * self.scale
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_and_line_chart_render_every_cell_and_line() {
        let h = Heatmap {
            id: "h",
            title: "H",
            x_title: "x",
            y_title: "y",
            columns: vec!["a".into(), "b".into()],
            rows: vec!["r".into()],
            values: vec![vec![Some(1.0), None]],
        };
        let svg = h.render();
        assert_eq!(svg.matches("<rect").count(), 2);
        let l = LineChart {
            id: "l",
            title: "L",
            x_title: "x",
            y_title: "y",
            lines: vec![Line {
                name: "f".into(),
                points: vec![(0.0, 1.0), (1.0, 2.0)],
                band: Some(vec![(0.0, 0.5, 1.5), (1.0, 1.5, 2.5)]),
                dashed: false,
            }],
            x_ticks: vec![(0.0, "start".into())],
            diagonal: false,
        };
        let svg = l.render();
        assert_eq!(svg.matches(r#"class="line""#).count(), 1);
        assert_eq!(svg.matches(r#"class="band""#).count(), 1);
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(number(541909.0), "541,909");
        assert_eq!(number(-1200.0), "-1,200");
        assert_eq!(number(0.25), "0.250");
        assert_eq!(number(12.34), "12.3");
    }

    #[test]
    fn a_chart_has_one_bar_per_value_and_escapes_labels() {
        let c = BarChart {
            id: "x",
            title: "T",
            series: &["a", "b"],
            rows: vec![("<r>".into(), vec![1.0, 2.0])],
            unit: "",
        };
        let svg = c.render();
        assert_eq!(svg.matches("<rect x=").count(), 2 + 2); // legend + bars
        assert!(svg.contains("&lt;r&gt;"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
