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
        let label_w = 230.0;
        let bar_w = 420.0;
        let row_h = 24.0;
        let top = if self.series.len() > 1 { 46.0 } else { 30.0 };
        let height = top + row_h * self.rows.len().max(1) as f64 + 10.0;
        let width = label_w + bar_w + 110.0;
        let max = self.rows.iter().map(|(_, v)| v.iter().sum::<f64>()).fold(0.0, f64::max).max(1e-9);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg class="chart" data-chart="{}" role="img" aria-label="{}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">"#,
            escape(self.id),
            escape(self.title)
        );
        let _ = write!(s, r#"<text x="0" y="16" class="title">{}</text>"#, escape(self.title));
        if self.series.len() > 1 {
            let mut x = label_w;
            for (i, name) in self.series.iter().enumerate() {
                let _ = write!(
                    s,
                    r#"<rect x="{x}" y="26" width="10" height="10" fill="{}"/><text x="{}" y="35" class="legend">{}</text>"#,
                    PALETTE[i % PALETTE.len()],
                    x + 14.0,
                    escape(name)
                );
                x += 24.0 + 7.0 * name.len() as f64;
            }
        }
        if self.rows.is_empty() {
            let _ = write!(s, r#"<text x="{label_w}" y="{}" class="empty">nothing to show</text>"#, top + 16.0);
        }
        for (r, (label, values)) in self.rows.iter().enumerate() {
            let y = top + row_h * r as f64;
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" class="label" text-anchor="end">{}</text>"#,
                label_w - 8.0,
                y + 16.0,
                escape(label)
            );
            let mut x = label_w;
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
        s.push_str("</svg>");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
