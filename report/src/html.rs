//! The static page: one self-contained `index.html` with inline CSS and
//! hand-written SVG bar charts. No scripts, no fonts, no external requests,
//! so it can be published as is (and opened from disk).
//!
//! Every number on the page carries a `data-cell` attribute naming where it
//! comes from in `report.json` (`by_event/app_created/events`,
//! `totals/machines`, ...), so a test can check the rendered page against
//! the JSON.
//!
//! A preview's page opens with a banner, [`PREVIEW_BANNER`], and says so in
//! its title; a partial period's page says when it will be complete.

use crate::publish::{Counts, Report, Table};
use std::fmt::Write as _;

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The label of a table's merged row.
pub const OTHER_LABEL: &str = "other";

/// The banner at the top of a preview's page (and the start of its title).
pub const PREVIEW_BANNER: &str = "PREVIEW — NOT FOR PUBLISHING: no k-anonymity applied";

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#1d232b;background:#fff}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2.2rem;border-bottom:1px solid #d8dde3;padding-bottom:.3rem}
p.lead{color:#4a5561;margin-top:0}
.totals{display:flex;gap:1rem;flex-wrap:wrap}.totals div{border:1px solid #d8dde3;border-radius:6px;padding:.7rem 1.1rem;min-width:9rem}
.totals b{display:block;font-size:1.5rem}
table{border-collapse:collapse;margin-top:.8rem;font-size:.9rem}th,td{padding:.25rem .8rem;border-bottom:1px solid #eef0f3;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}tr.other td{color:#5b6673;font-style:italic}
svg{display:block;max-width:100%;height:auto}svg text{font-size:12px;fill:#1d232b}svg .bar{fill:#3b6fb6}svg .axis{stroke:#9aa4af}
footer{margin-top:3rem;color:#5b6673;font-size:.85rem}
.preview{background:#b00020;color:#fff;font-weight:700;font-size:1.3rem;padding:1rem 1.2rem;border-radius:6px}.preview span{display:block;font-weight:400;font-size:1rem;margin-top:.3rem}
.partial{background:#fff4d6;border:1px solid #e0b030;border-radius:6px;padding:.7rem 1rem}
";

/// Render the page.
pub fn page(r: &Report) -> String {
    let mut h = String::new();
    let mut title = format!("{} usage statistics, {}", r.product, r.period.label);
    if r.preview {
        title = format!("{PREVIEW_BANNER} \u{2014} {title}");
    }
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n{}<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        // Should a preview reach a web server anyway, keep it out of
        // search engines.
        if r.preview { "<meta name=\"robots\" content=\"noindex\">\n" } else { "" },
        esc(&title),
    );
    if r.preview {
        let _ = writeln!(
            h,
            "<div class=\"preview\" role=\"alert\">{}<span>Every count is shown, however few machines it covers, so it can describe a single machine. Made by <code>telemetry-report --preview</code> for a look at your own data: do not publish this page or its files.</span></div>",
            esc(PREVIEW_BANNER)
        );
    }
    let _ = writeln!(
        h,
        "<h1>{}</h1>",
        esc(&format!(
            "{} usage statistics, {}",
            r.product, r.period.label
        ))
    );
    if let Some(day) = &r.complete_on {
        let _ = writeln!(
            h,
            "<p class=\"partial\" role=\"note\"><b>Partial period.</b> This report was made before {} was complete: batches filed up to {} days after its end are counted, and more may still arrive, so the numbers can still grow. A report made on or after {} (UTC) is complete.</p>",
            esc(&r.period.label),
            r.period.late_days,
            esc(day)
        );
    }
    if r.preview {
        let _ = writeln!(
            h,
            "<p class=\"lead\">Aggregates of telemetry from {} to {} (UTC), with no k rule: <span data-cell=\"k\">{}</span> machine is enough for a number to be shown. No machine identifier is shown.</p>",
            esc(&r.period.from),
            esc(&r.period.to),
            r.k
        );
    } else {
        let _ = writeln!(
            h,
            "<p class=\"lead\">Anonymous aggregates of opt-in telemetry from {} to {} (UTC). Every number counts at least <span data-cell=\"k\">{}</span> distinct machines; smaller groups are merged into &ldquo;{OTHER_LABEL}&rdquo; or marked suppressed. No machine identifier is published.</p>",
            esc(&r.period.from),
            esc(&r.period.to),
            r.k
        );
    }
    h.push_str("<div class=\"totals\">\n");
    match r.totals {
        Some(t) => {
            let _ = writeln!(
                h,
                "<div><b data-cell=\"totals/events\">{}</b>events</div>\n<div><b data-cell=\"totals/machines\">{}</b>machines</div>",
                t.events, t.machines
            );
        }
        None => h.push_str(
            "<div><b data-cell=\"totals/suppressed\">suppressed</b>fewer machines than k in this period</div>\n",
        ),
    }
    match r.dropped {
        // None dropped: say so, rather than "suppressed" (issue #12).
        Some(d) if d.machines == 0 => {
            let _ = writeln!(
                h,
                "<div><b data-cell=\"dropped/events\">{}</b>events dropped by full local stores (none)</div>",
                d.events
            );
        }
        Some(d) => {
            let _ = writeln!(
                h,
                "<div><b data-cell=\"dropped/events\">{}</b>events dropped by full local stores</div>",
                d.events
            );
        }
        None => h.push_str(
            "<div><b data-cell=\"dropped/suppressed\">suppressed</b>events dropped by full local stores (fewer machines than k)</div>\n",
        ),
    }
    h.push_str("</div>\n");

    section(&mut h, "Events per week", "by_week", &r.by_week, true);
    section(&mut h, "Events by name", "by_event", &r.by_event, false);
    section(&mut h, "Operating systems", "by_os", &r.by_os, false);
    section(&mut h, "Builds", "by_build", &r.by_build, false);
    event_week(&mut h, r);
    data_sections(&mut h, r);

    let link = |file: &str| {
        let name = esc(&crate::output::file_name(file, r.preview));
        format!("<a href=\"{name}\">{name}</a>")
    };
    let _ = writeln!(
        h,
        "<footer>Generated by telemetry-report{}. Machine-readable data: {} (schema <code>{}</code>), {}, {}, {}, {}, {}, {}, {}.</footer>\n</body>\n</html>",
        if r.preview { " --preview (not for publishing)" } else { "" },
        link("report.json"),
        esc(r.schema),
        link("by_event.csv"),
        link("by_os.csv"),
        link("by_build.csv"),
        link("by_week.csv"),
        link("by_event_week.csv"),
        link("data.csv"),
        link("data_percentiles.csv"),
    );
    h
}

fn section(h: &mut String, title: &str, id: &str, t: &Table, weekly: bool) {
    let _ = writeln!(h, "<section id=\"{id}\">\n<h2>{}</h2>", esc(title));
    if t.rows.is_empty() && t.other.is_none() {
        h.push_str("<p>Nothing to publish.</p>\n</section>\n");
        return;
    }
    let bars: Vec<(String, u64)> = if weekly {
        let mut rows: Vec<_> = t
            .rows
            .iter()
            .map(|r| (r.key.clone(), r.counts.events))
            .collect();
        rows.sort();
        rows
    } else {
        let mut rows: Vec<_> = t
            .rows
            .iter()
            .map(|r| (r.key.clone(), r.counts.events))
            .collect();
        if let Some(o) = &t.other {
            rows.push((OTHER_LABEL.to_string(), o.counts.events));
        }
        rows
    };
    if weekly {
        h.push_str(&columns_svg(title, &bars));
    } else {
        h.push_str(&bars_svg(title, &bars));
    }
    let col = t.column;
    let _ = writeln!(
        h,
        "<table>\n<thead><tr><th>{col}</th><th class=\"n\">events</th><th class=\"n\">machines</th></tr></thead>\n<tbody>"
    );
    let mut rows: Vec<_> = t.rows.iter().collect();
    if weekly {
        rows.sort_by(|a, b| a.key.cmp(&b.key));
    }
    for r in rows {
        row(h, id, &r.key, &esc(&r.key), r.counts, "");
    }
    if let Some(o) = &t.other {
        let label = format!(
            "{OTHER_LABEL} ({} value{} merged so that every number counts at least k machines)",
            o.values,
            if o.values == 1 { "" } else { "s" }
        );
        row(h, id, "@other", &esc(&label), o.counts, " class=\"other\"");
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
}

/// "What users sent": one chart and table per catalogued key of each
/// published event. An int key's bins are charted in order, with its
/// percentiles under the table; other keys' values largest first.
fn data_sections(h: &mut String, r: &Report) {
    if r.data.is_empty() {
        return;
    }
    h.push_str("<section id=\"data\">\n<h2>What users sent</h2>\n<p>Per event, the values of each data key its catalogue lists. &ldquo;(none)&rdquo;: events without the key (or with data the catalogue does not allow). Bins <code>a..b</code> hold values from a up to, not including, b.</p>\n");
    for d in &r.data {
        let title = format!("{} \u{b7} {}", d.event, d.key);
        let _ = writeln!(h, "<h3>{}</h3>", esc(&title));
        let mut bars: Vec<(String, u64)> = d
            .values
            .rows
            .iter()
            .map(|row| (row.key.clone(), row.counts.events))
            .collect();
        if let Some(bins) = &d.bins {
            // In the bins' order, (none) last.
            let labels = crate::data::bin_labels(bins, None);
            let order = |label: &str| labels.iter().position(|b| b == label).unwrap_or(usize::MAX);
            bars.sort_by_key(|(label, _)| order(label));
        }
        if let Some(o) = &d.values.other {
            bars.push((OTHER_LABEL.to_string(), o.counts.events));
        }
        h.push_str(&bars_svg(&title, &bars));
        let _ = writeln!(
            h,
            "<table>\n<thead><tr><th>value</th><th class=\"n\">events</th><th class=\"n\">machines</th></tr></thead>\n<tbody>"
        );
        let table = format!("data/{}/{}", d.event, d.key);
        for row in &d.values.rows {
            self::row(h, &table, &row.key, &esc(&row.key), row.counts, "");
        }
        if let Some(o) = &d.values.other {
            let label = format!(
                "{OTHER_LABEL} ({} value{} merged so that every number counts at least k machines)",
                o.values,
                if o.values == 1 { "" } else { "s" }
            );
            self::row(
                h,
                &table,
                "@other",
                &esc(&label),
                o.counts,
                " class=\"other\"",
            );
        }
        h.push_str("</tbody>\n</table>\n");
        match &d.percentiles {
            Some(Some(p)) => {
                let cell = |f: &str| format!("{}/percentiles/{f}", esc(&table));
                let _ = writeln!(
                    h,
                    "<p>Median in <b data-cell=\"{}\">{}</b>, 90th percentile in <b data-cell=\"{}\">{}</b>, 99th in <b data-cell=\"{}\">{}</b> (bins of the nearest rank over <span data-cell=\"{}\">{}</span> events from <span data-cell=\"{}\">{}</span> machines; <i>other</i>: a bin merged into the other row).</p>",
                    cell("p50"), esc(&p.p50), cell("p90"), esc(&p.p90), cell("p99"), esc(&p.p99),
                    cell("events"), p.events, cell("machines"), p.machines
                );
            }
            Some(None) => {
                let _ = writeln!(
                    h,
                    "<p>Percentiles: <span data-cell=\"{}/percentiles/suppressed\">suppressed</span> (fewer than k machines sent a value).</p>",
                    esc(&table)
                );
            }
            None => {}
        }
    }
    h.push_str("</section>\n");
}

fn row(h: &mut String, table: &str, key: &str, label: &str, c: Counts, class: &str) {
    let cell = format!("{table}/{}", esc(key));
    let _ = writeln!(
        h,
        "<tr{class}><td>{label}</td><td class=\"n\" data-cell=\"{cell}/events\">{}</td><td class=\"n\" data-cell=\"{cell}/machines\">{}</td></tr>",
        c.events, c.machines
    );
}

fn event_week(h: &mut String, r: &Report) {
    if r.by_event_week.is_empty() {
        return;
    }
    let mut weeks: Vec<&str> = r.by_event_week.iter().map(|c| c.week.as_str()).collect();
    weeks.sort();
    weeks.dedup();
    let mut events: Vec<&str> = r.by_event_week.iter().map(|c| c.event.as_str()).collect();
    events.sort();
    events.dedup();
    h.push_str("<section id=\"by_event_week\">\n<h2>Events by name and week</h2>\n<p>Weeks start on Monday. &ldquo;&ndash;&rdquo;: fewer than k machines, or none (suppressed).</p>\n<table>\n<thead><tr><th>event</th>");
    let long = spans_years(weeks.iter().copied());
    for w in &weeks {
        let _ = write!(h, "<th class=\"n\">{}</th>", esc(week_label(w, long)));
    }
    h.push_str("</tr></thead>\n<tbody>\n");
    // Looked up, not searched: events × weeks cells (many thousands when
    // uploaders invent event names) over a list as long would be quadratic.
    let cells: std::collections::HashMap<(&str, &str), _> = r
        .by_event_week
        .iter()
        .map(|c| ((c.event.as_str(), c.week.as_str()), c))
        .collect();
    for e in &events {
        let _ = write!(h, "<tr><td>{}</td>", esc(e));
        for w in &weeks {
            let cell = cells.get(&(*e, *w));
            match cell {
                Some(c) => match c.counts {
                    Some(n) => {
                        let _ = write!(
                            h,
                            "<td class=\"n\" data-cell=\"by_event_week/{}/{}/events\">{}</td>",
                            esc(e),
                            esc(w),
                            n.events
                        );
                    }
                    None => {
                        let _ = write!(
                            h,
                            "<td class=\"n\" data-cell=\"by_event_week/{}/{}/suppressed\">&ndash;</td>",
                            esc(e),
                            esc(w)
                        );
                    }
                },
                None => h.push_str("<td class=\"n\"></td>"),
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n</section>\n");
}

/// Horizontal bars, one per row, with the label left and the value right.
fn bars_svg(title: &str, rows: &[(String, u64)]) -> String {
    const W: u32 = 720;
    const LABEL: u32 = 220;
    const VALUE: u32 = 80;
    const ROW: u32 = 22;
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let height = ROW * rows.len() as u32 + 8;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {height}\" width=\"{W}\" height=\"{height}\" role=\"img\" aria-label=\"{}\">\n",
        esc(title)
    );
    let span = W - LABEL - VALUE;
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = 4 + ROW * i as u32;
        let w = ((*v as f64 / max as f64) * span as f64).round().max(1.0) as u32;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><rect class=\"bar\" x=\"{LABEL}\" y=\"{}\" width=\"{w}\" height=\"{}\"><title>{}: {v}</title></rect><text x=\"{}\" y=\"{}\">{v}</text>",
            LABEL - 8,
            y + 15,
            esc(&truncate(label, 30)),
            y + 3,
            ROW - 6,
            esc(label),
            LABEL + w + 6,
            y + 15
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Vertical bars over time (one per week).
fn columns_svg(title: &str, rows: &[(String, u64)]) -> String {
    const W: u32 = 720;
    const H: u32 = 240;
    const LEFT: u32 = 60;
    const BOTTOM: u32 = 40;
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let n = rows.len().max(1);
    // Fractional layout: with more weeks than pixels (a multi-year range)
    // the bars get thinner instead of the integer slot reaching 0.
    let slot = f64::from(W - LEFT - 10) / n as f64;
    let bar = slot * 0.75;
    let plot = H - BOTTOM - 10;
    // About twelve date labels whatever the number of weeks, so they never
    // overlap; the year is shown when the weeks span more than one.
    let every = n.div_ceil(12).max(1);
    let long = spans_years(rows.iter().map(|r| r.0.as_str()));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">\n",
        esc(title)
    );
    let _ = writeln!(
        s,
        "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{}\" x2=\"{}\" y2=\"{}\"/><text x=\"{}\" y=\"16\" text-anchor=\"end\">{max}</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">0</text>",
        H - BOTTOM,
        W - 10,
        H - BOTTOM,
        LEFT - 6,
        LEFT - 6,
        H - BOTTOM
    );
    for (i, (week, v)) in rows.iter().enumerate() {
        let x = f64::from(LEFT) + slot * i as f64 + (slot - bar) / 2.0;
        let hgt = ((*v as f64 / max as f64) * plot as f64).round().max(1.0) as u32;
        let y = H - BOTTOM - hgt;
        let _ = writeln!(
            s,
            "<rect class=\"bar\" x=\"{x:.2}\" y=\"{y}\" width=\"{bar:.2}\" height=\"{hgt}\"><title>week of {}: {v} events</title></rect>",
            esc(week)
        );
        if i % every == 0 {
            let _ = writeln!(
                s,
                "<text x=\"{:.2}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + bar / 2.0,
                H - BOTTOM + 16,
                esc(week_label(week, long))
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// Whether the weeks (`YYYY-MM-DD`) fall in more than one year, so that
/// `MM-DD` alone would be ambiguous.
fn spans_years<'a>(weeks: impl Iterator<Item = &'a str>) -> bool {
    let mut years = weeks.map(|w| w.get(..4).unwrap_or(w));
    match years.next() {
        Some(first) => years.any(|y| y != first),
        None => false,
    }
}

/// A week's column label: `MM-DD`, or the whole date when the weeks span
/// years.
fn week_label(week: &str, long: bool) -> &str {
    if long {
        week
    } else {
        week.get(5..).unwrap_or(week)
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::publish::{publish, Completeness, Privacy};

    fn report(privacy: Privacy, completeness: Completeness, dropped: bool) -> Report {
        let period = crate::period::Period::quarter("2026Q4").unwrap();
        let mut a = crate::aggregate::Aggregator::new(period.clone());
        for m in 0..3u128 {
            let (event, data) = if dropped && m == 0 {
                ("telemetry_dropped", r#"{"count":4}"#)
            } else {
                ("stop", "{}")
            };
            let line = format!(
                r#"{{"id":"{}","event":"{event}","product":"p","build":"1.0","timestamp":"2026-10-05T10:00:00.000001Z","machine":"m{m}","os":"linux","arch":"x86_64","data":{data}}}"#,
                uuid::Uuid::from_u128(m + 1)
            );
            a.add_line(line.as_bytes()).unwrap();
        }
        publish(&a, "p", &period, 14, privacy, completeness)
    }

    #[test]
    fn a_preview_page_opens_with_the_banner() {
        let h = page(&report(Privacy::Preview, Completeness::Complete, false));
        let body = &h[h.find("<body>").unwrap() + 6..];
        assert!(
            body.trim_start().starts_with(&format!(
                "<div class=\"preview\" role=\"alert\">{PREVIEW_BANNER}"
            )),
            "{h}"
        );
        assert!(h.contains(&format!("<title>{PREVIEW_BANNER}")));
        assert!(h.contains("<meta name=\"robots\" content=\"noindex\">"));
        assert!(h.contains("href=\"preview-by_event.csv\""));
        assert!(!h.contains("at least <span"), "no claim of a k rule: {h}");
        let public = page(&report(Privacy::K(2), Completeness::Complete, false));
        assert!(!public.contains("PREVIEW") && !public.contains("noindex"));
        assert!(public.contains("href=\"report.json\""));
    }

    #[test]
    fn a_partial_page_says_when_it_is_complete() {
        let complete_on = crate::period::Day::parse("2027-01-15").unwrap();
        let h = page(&report(
            Privacy::K(2),
            Completeness::Partial { complete_on },
            false,
        ));
        assert!(
            h.contains("<p class=\"partial\" role=\"note\"><b>Partial period.</b>")
                && h.contains("on or after 2027-01-15 (UTC)"),
            "{h}"
        );
        let h = page(&report(Privacy::K(2), Completeness::Complete, false));
        assert!(!h.contains("class=\"partial\""));
    }

    // Issue #12: "suppressed" was shown for dropped events when none were
    // dropped.
    #[test]
    fn no_dropped_events_shows_none_and_a_few_shows_suppressed() {
        let h = page(&report(Privacy::K(2), Completeness::Complete, false));
        assert!(
            h.contains(
                "<b data-cell=\"dropped/events\">0</b>events dropped by full local stores (none)"
            ),
            "{h}"
        );
        assert!(!h.contains("dropped/suppressed"));
        // One machine dropped events: under k = 2.
        let h = page(&report(Privacy::K(2), Completeness::Complete, true));
        assert!(
            h.contains("<b data-cell=\"dropped/suppressed\">suppressed</b>"),
            "{h}"
        );
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(esc("<b a=\"x\">&'"), "&lt;b a=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn charts_have_one_bar_per_row() {
        let rows = vec![("a".to_string(), 10), ("b<".to_string(), 0)];
        let s = bars_svg("t", &rows);
        assert_eq!(s.matches("<rect").count(), 2);
        assert!(s.contains("b&lt;"));
        let s = columns_svg("t", &rows);
        assert_eq!(s.matches("<rect").count(), 2);
    }

    #[test]
    fn many_weeks_fit_and_years_are_shown_when_they_change() {
        // 700 weeks (over 13 years) once made the integer slot 0 and
        // `slot - bar` underflow.
        let rows: Vec<(String, u64)> = (0..700)
            .map(|i| {
                let d = crate::period::Day::parse("2014-01-06").unwrap().plus(7 * i);
                (d.to_string(), i as u64)
            })
            .collect();
        let s = columns_svg("t", &rows);
        assert_eq!(s.matches("<rect").count(), 700);
        for x in s.split(" x=\"").skip(1) {
            let x: f64 = x[..x.find('"').unwrap()].parse().unwrap();
            assert!((0.0..=720.0).contains(&x), "{x}");
        }
        assert!(s.contains(">2014-01-06<"), "full dates across years");
        assert!(s.matches("text-anchor=\"middle\"").count() <= 12);
        // One year: month and day only.
        let q = vec![("2026-10-05".to_string(), 1), ("2026-10-12".to_string(), 2)];
        let s = columns_svg("t", &q);
        assert!(s.contains(">10-05<") && !s.contains(">2026-10-05<"));
        assert!(spans_years(["2026-12-28", "2027-01-04"].into_iter()));
    }
}
