//! The dashboard's expiry chart as a server-rendered SVG bar chart.
//!
//! Made for a page under a Content-Security-Policy without `unsafe-inline`: no `style`
//! attribute, no `<style>` or `<script>` element; colours and sizes are presentation attributes
//! (`fill`, `font-size`) and every element has a `class` a stylesheet may restyle (`chart`,
//! `bar`, `axis`, `grid`, `tick`, `label`). Accessible: `role="img"` with a `<title>` and a
//! `<desc>` that gives the figures in words, a text label per axis, and a `<title>` on each bar
//! naming its week and count. All text is XML-escaped. Pure: a string out, nothing else.

use std::fmt::Write;

use time::{Date, Duration};

/// One bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bar {
    /// What the bar stands for, in words (its `<title>` says `LABEL: VALUE`).
    pub label: String,
    /// The text under the bar, if it has one (not every bar has room for one).
    pub tick: Option<String>,
    /// Its value.
    pub value: u32,
}

/// A bar chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BarChart {
    /// The chart's title.
    pub title: String,
    /// The chart's description (the figures in words).
    pub desc: String,
    /// The horizontal axis's label.
    pub x_label: String,
    /// The vertical axis's label.
    pub y_label: String,
    /// What a bar's value counts, after the number in its `<title>` (`certificates`).
    pub unit: String,
    /// The bars, left to right.
    pub bars: Vec<Bar>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 60.0;
const BAR_FILL: &str = "#2b6cb0";
const INK: &str = "#333333";
const GRID: &str = "#d0d0d0";

/// `text` with `&`, `<`, `>`, `"` and `'` escaped (for text and attribute values alike).
pub fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 does not allow at all are left out.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// The top of the vertical axis and the step between its grid lines: a 1, 2 or 5 times a
/// power of ten step with at most 5 steps up to `max` or beyond (1 when every value is 0).
fn axis(max: u32) -> (u64, u64) {
    let max = u64::from(max).max(1);
    let mut magnitude = 1u64;
    loop {
        for m in [1u64, 2, 5] {
            let step = m * magnitude;
            let steps = max.div_ceil(step);
            if steps <= 5 {
                return (steps * step, step);
            }
        }
        magnitude *= 10;
    }
}

/// `chart` as an SVG document fragment (`<svg …>…</svg>`).
pub fn bar_chart_svg(chart: &BarChart) -> String {
    let mut out = String::new();
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let base = TOP + plot_h;
    let max = chart.bars.iter().map(|b| b.value).max().unwrap_or(0);
    let (top, step) = axis(max);
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" role=\"img\" \
viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"100%\" preserveAspectRatio=\"xMidYMid meet\" \
aria-labelledby=\"chart-title chart-desc\" font-family=\"sans-serif\" font-size=\"11\">\
<title id=\"chart-title\">{}</title><desc id=\"chart-desc\">{}</desc>",
        xml_escape(&chart.title),
        xml_escape(&chart.desc)
    );
    // Grid lines and the vertical axis's figures.
    let mut v = 0u64;
    while v <= top {
        let y = base - plot_h * (v as f64) / (top as f64);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" \
stroke=\"{GRID}\" stroke-width=\"1\"/>\
<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{INK}\">{v}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0
        );
        v += step;
    }
    let n = chart.bars.len().max(1) as f64;
    let slot = plot_w / n;
    let bar_w = slot * 0.7;
    for (i, bar) in chart.bars.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar_w) / 2.0;
        let mut h = plot_h * f64::from(bar.value) / (top as f64);
        // A bar dwarfed by a huge one stays visible.
        if bar.value > 0 && h < 1.0 {
            h = 1.0;
        }
        let _ = write!(
            out,
            "<rect class=\"bar\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar_w:.1}\" height=\"{h:.1}\" \
fill=\"{BAR_FILL}\"><title>{}: {} {}</title></rect>",
            base - h,
            xml_escape(&bar.label),
            bar.value,
            xml_escape(&chart.unit)
        );
        if let Some(tick) = &bar.tick {
            let _ = write!(
                out,
                "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
fill=\"{INK}\">{}</text>",
                x + bar_w / 2.0,
                base + 14.0,
                xml_escape(tick)
            );
        }
    }
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{base:.1}\" x2=\"{:.1}\" y2=\"{base:.1}\" \
stroke=\"{INK}\" stroke-width=\"1\"/>\
<line class=\"axis\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{base:.1}\" stroke=\"{INK}\" \
stroke-width=\"1\"/>\
<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{INK}\">{}</text>\
<text class=\"label\" x=\"0\" y=\"0\" transform=\"translate(14 {:.1}) rotate(-90)\" \
text-anchor=\"middle\" fill=\"{INK}\">{}</text></svg>",
        LEFT + plot_w,
        LEFT + plot_w / 2.0,
        HEIGHT - 14.0,
        xml_escape(&chart.x_label),
        TOP + plot_h / 2.0,
        xml_escape(&chart.y_label)
    );
    out
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn day_month(d: Date) -> String {
    format!(
        "{} {}",
        d.day(),
        MONTHS[usize::from(u8::from(d.month())) - 1]
    )
}

fn long_date(d: Date) -> String {
    format!("{} {}", day_month(d), d.year())
}

/// The start of week `k` after `first_week`, in words (`week k` past the last date `time`
/// can hold).
fn week_name(first_week: Date, k: usize) -> String {
    i64::try_from(k)
        .ok()
        .and_then(|k| first_week.checked_add(Duration::weeks(k)))
        .map_or_else(
            || format!("week {k}"),
            |d| format!("week of {}", long_date(d)),
        )
}

/// The chart of certificates expiring per week: `weeks[k]` expire in the week that starts
/// `k` weeks after `first_week` (see [`super::ExpiryFigures`]). A tick names every fourth
/// week's first day.
pub fn expiry_chart_svg(weeks: &[u32], first_week: Date) -> String {
    let total: u64 = weeks.iter().map(|&n| u64::from(n)).sum();
    let mut desc = format!(
        "{total} certificate(s) expire in the {} week(s) from {}.",
        weeks.len(),
        long_date(first_week)
    );
    let busy: Vec<String> = weeks
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{}: {n}", week_name(first_week, k)))
        .collect();
    if busy.is_empty() {
        desc.push_str(" None expires in any of these weeks.");
    } else {
        let _ = write!(desc, " {}; every other week: 0.", busy.join("; "));
    }
    let bars = weeks
        .iter()
        .enumerate()
        .map(|(k, &value)| Bar {
            label: week_name(first_week, k),
            tick: (k % 4 == 0).then(|| {
                i64::try_from(k)
                    .ok()
                    .and_then(|w| first_week.checked_add(Duration::weeks(w)))
                    .map_or_else(|| format!("+{k}w"), day_month)
            }),
            value,
        })
        .collect();
    bar_chart_svg(&BarChart {
        title: format!("Certificates expiring per week, next {} weeks", weeks.len()),
        desc,
        x_label: "Week starting".into(),
        y_label: "Certificates expiring".into(),
        unit: "certificate(s)".into(),
        bars,
    })
}
