//! The benchmark report's chart: one panel per benchmark group, a horizontal bar per candidate
//! (ns/op, shorter is better), drawn with plotters and an embedded DejaVu font so it renders the
//! same on a machine without fonts.

use crate::bench::Measured;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

/// One group of side-by-side measurements (e.g. "counter add, 2 threads").
pub struct Group {
    /// Panel title.
    pub title: String,
    /// Candidates, the project's own first.
    pub rows: Vec<Measured>,
}

fn register_font() {
    use std::sync::Once;
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are 'static; registration only fails on malformed font data.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

/// Writes `groups` as a PNG at `path`.
pub fn write_png(
    path: &Path,
    title: &str,
    groups: &[Group],
) -> Result<(), Box<dyn std::error::Error>> {
    register_font();
    let bar_h = 26u32;
    let panel_heights: Vec<u32> = groups
        .iter()
        .map(|g| 76 + bar_h * g.rows.len() as u32)
        .collect();
    let height = 70 + panel_heights.iter().sum::<u32>();
    let root = BitMapBackend::new(path, (1100, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, mut rest) = root.split_vertically(60);
    header.draw(&Text::new(title, (20, 18), ("sans-serif", 24).into_font()))?;
    for (group, h) in groups.iter().zip(&panel_heights) {
        let (panel, below) = rest.split_vertically(*h);
        rest = below;
        let max = group
            .rows
            .iter()
            .map(|r| r.ns_per_op)
            .fold(0.0f64, f64::max)
            .max(1e-9)
            * 1.15;
        let n = group.rows.len();
        let mut chart = ChartBuilder::on(&panel)
            .caption(&group.title, ("sans-serif", 18))
            .margin(8)
            // Room for the last tick label at the right edge.
            .margin_right(36)
            // Tick labels, then the axis caption below them (not over them).
            .x_label_area_size(40)
            .y_label_area_size(330)
            // Segments 0..=n-1: one per candidate.
            .build_cartesian_2d(0.0..max, (0..n.saturating_sub(1)).into_segmented())?;
        let names: Vec<String> = group.rows.iter().map(|r| r.name.clone()).collect();
        // Row 0 (the project's own candidate) at the top.
        let label = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) if *i < n => names[n - 1 - *i].clone(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .y_labels(n)
            .y_label_formatter(&label)
            .x_label_formatter(&|v: &f64| {
                if max >= 20.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            })
            .x_desc("ns/op (shorter is better)")
            .label_style(("sans-serif", 14))
            .draw()?;
        chart.draw_series(group.rows.iter().enumerate().map(|(i, r)| {
            let y = n - 1 - i;
            let color = if i == 0 {
                RGBColor(0x1f, 0x77, 0xb4)
            } else {
                RGBColor(0x9a, 0x9a, 0x9a)
            };
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(y)),
                    (r.ns_per_op, SegmentValue::Exact(y + 1)),
                ],
                color.filled(),
            );
            bar.set_margin(3, 3, 0, 0);
            bar
        }))?;
        chart.draw_series(group.rows.iter().enumerate().map(|(i, r)| {
            let y = n - 1 - i;
            Text::new(
                format!(" {:.2}", r.ns_per_op),
                (r.ns_per_op, SegmentValue::CenterOf(y)),
                TextStyle::from(("sans-serif", 13).into_font())
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_png() {
        let path = std::env::temp_dir().join(format!("rseq-chart-{}.png", std::process::id()));
        let rows = vec![
            Measured {
                name: "ours".into(),
                ns_per_op: 2.5,
            },
            Measured {
                name: "theirs".into(),
                ns_per_op: 10.0,
            },
        ];
        write_png(
            &path,
            "test",
            &[Group {
                title: "group".into(),
                rows,
            }],
        )
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert!(bytes.len() > 1000);
        let _ = std::fs::remove_file(&path);
    }
}
