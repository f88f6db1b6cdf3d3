//! The chart: median entries/s per configuration, as an SVG (text as SVG `<text>`, no fonts).

use std::path::Path;

use plotters::coord::types::RangedCoordusize;
use plotters::prelude::*;

use crate::report::Header;
use crate::{Conf, Row, CONCURRENCY};

/// qupid's bars.
const QUPID: RGBColor = RGBColor(31, 119, 180);
/// apalis's bars.
const APALIS: RGBColor = RGBColor(230, 120, 20);
/// The floor's bar.
const FLOOR: RGBColor = RGBColor(120, 120, 120);

/// Draws one horizontal bar per configuration that finished (log scale, the median
/// labelled, the min–max of the runs as a black line across the bar's end) into `path`.
pub fn draw(path: &Path, rows: &[Row], header: &Header) -> Result<(), String> {
    let bars: Vec<(String, Conf, (f64, f64, f64))> = rows
        .iter()
        .filter_map(|r| {
            r.rates().map(|rates| {
                let mut label = r.conf.label();
                if r.failure.is_some() {
                    label.push_str(&format!(" (N = {})", r.size));
                }
                if r.outcomes.iter().any(|o| o.twice > 0) {
                    label.push_str(" (keeps duplicates)");
                }
                (label, r.conf, rates)
            })
        })
        .collect();
    if bars.is_empty() {
        return Err("no configuration finished".to_owned());
    }
    let lo = bars.iter().map(|b| b.2 .1).fold(f64::INFINITY, f64::min);
    let hi = bars.iter().map(|b| b.2 .2).fold(0.0, f64::max);
    let (lo, hi) = (
        10f64.powf(lo.log10().floor()),
        10f64.powf((hi * 3.0).log10().ceil()),
    );
    let height = 120 + 44 * bars.len() as u32;
    let root = SVGBackend::new(path, (1020, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let n = bars.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Entries/s, median of runs (log scale): 10% duplicate keys, no-op work, concurrency {CONCURRENCY} — {}",
                header.day
            ),
            ("sans-serif", 16),
        )
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(250)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n - 1).into_segmented())
        .map_err(|e| e.to_string())?;
    // The first configuration (the floor) at the top.
    let names: Vec<String> = bars.iter().rev().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc("entries/s")
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|e| e.to_string())?;
    draw_bars(&mut chart, &bars, lo)?;
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

/// The chart: entries/s on a log scale across, one segment per configuration down.
type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<
        plotters::coord::combinators::LogCoord<f64>,
        plotters::coord::ranged1d::SegmentedCoord<RangedCoordusize>,
    >,
>;

/// The bars, the min–max lines and the labels.
fn draw_bars(
    chart: &mut Chart<'_, '_>,
    bars: &[(String, Conf, (f64, f64, f64))],
    lo: f64,
) -> Result<(), String> {
    for (i, (_, conf, (median, min, max))) in bars.iter().rev().enumerate() {
        let color = match conf {
            Conf::Floor => FLOOR,
            Conf::Qupid(_) => QUPID,
            Conf::Apalis(_) | Conf::ApalisRedisTtl => APALIS,
        };
        let mut bar = Rectangle::new(
            [
                (lo, SegmentValue::Exact(i)),
                (*median, SegmentValue::Exact(i + 1)),
            ],
            color.filled(),
        );
        bar.set_margin(8, 8, 0, 0);
        chart.draw_series([bar]).map_err(|e| e.to_string())?;
        chart
            .draw_series([PathElement::new(
                vec![
                    (*min, SegmentValue::CenterOf(i)),
                    (*max, SegmentValue::CenterOf(i)),
                ],
                BLACK.stroke_width(2),
            )])
            .map_err(|e| e.to_string())?;
        chart
            .draw_series([Text::new(
                crate::report::thousands(*median),
                (max * 1.08, SegmentValue::CenterOf(i)),
                ("sans-serif", 13).into_font().color(&BLACK),
            )])
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// `1k`, `10k`, `1M`: axis labels.
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else {
        format!("{v}")
    }
}
