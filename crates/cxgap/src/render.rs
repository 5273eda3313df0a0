//! The text form of an analysis: every figure with its interval and n, low-n groups
//! marked, so nobody acts on three responses.

use crate::analyze::Analysis;
use crate::table::Table;
use cxgap_domain::aggregate::Summary;
use cxgap_domain::report::{GapReport, GroupValue};
use cxgap_domain::stats::Estimate;
use cxgap_domain::{Channel, JourneyStage};
use std::fmt::Write;

fn est(e: Option<Estimate>, dp: usize) -> String {
    match e {
        Some(e) => format!("{:.dp$} [{:.dp$}, {:.dp$}]", e.value, e.lower, e.upper),
        None => "-".into(),
    }
}

fn n_of(e: Option<Estimate>) -> String {
    e.map_or("-".into(), |e| e.n.to_string())
}

fn pct(e: Option<Estimate>) -> Option<Estimate> {
    e.map(|e| e.map(|x| x * 100.0))
}

fn summary_line(out: &mut String, label: &str, e: Option<Estimate>, dp: usize, unit: &str) {
    if let Some(x) = e {
        let _ = writeln!(out, "  {label:<26}{}{unit}  n={}", est(Some(x), dp), x.n);
    }
}

fn summary_block(out: &mut String, s: &Summary) {
    if let Some(n) = &s.nps {
        let _ = writeln!(
            out,
            "  {:<26}{}  n={}  (adjusted Wald [{:.1}, {:.1}]; {} promoters, {} passives, {} detractors)",
            "NPS",
            est(Some(n.wald), 1),
            n.wald.n,
            n.adjusted_wald.lower,
            n.adjusted_wald.upper,
            n.promoters,
            n.passives,
            n.detractors
        );
    }
    summary_line(out, "CSAT % satisfied (4–5)", s.csat_percent, 1, "");
    summary_line(out, "CSAT mean (1–5)", s.csat_mean, 2, "");
    summary_line(out, "CES mean (1–7, 7 easy)", s.ces, 2, "");
    summary_line(out, "Experience score (0–1)", s.experience, 3, "");
    summary_line(out, "Sentiment (−1…1)", s.sentiment, 3, "");
    summary_line(out, "Negative comments %", pct(s.negative_sentiment_share), 1, "");
    summary_line(out, "Service quality P−E", s.service_quality, 2, "");
    summary_line(out, "  importance-weighted", s.service_quality_weighted, 2, "");
}

fn group_label(key: &[(String, GroupValue)]) -> String {
    key.iter().map(|(_, v)| v.to_string()).collect::<Vec<_>>().join(" / ")
}

fn group_table(r: &GapReport) -> Table {
    let name = r.group_by.join(" / ");
    let mut t = Table::new([name.as_str(), "events", "NPS [95% CI]", "n", "CSAT%", "CES", "experience", "P−E gap", ""]);
    for g in &r.groups {
        let s = &g.summary;
        t.row(vec![
            group_label(&g.key),
            s.events.to_string(),
            est(s.nps.map(|n| n.wald), 1),
            s.nps.map_or("-".into(), |n| n.wald.n.to_string()),
            s.csat_percent.map_or("-".into(), |e| format!("{:.1}", e.value)),
            s.ces.map_or("-".into(), |e| format!("{:.2}", e.value)),
            s.experience.map_or("-".into(), |e| format!("{:.3}", e.value)),
            s.service_quality.map_or("-".into(), |e| format!("{:+.2}", e.value)),
            if s.low_n { "low n".into() } else { String::new() },
        ]);
    }
    t
}

fn dimension_table(s: &Summary) -> Table {
    let mut t = Table::new(["dimension", "expectation", "perception", "gap P−E [95% CI]", "n"]);
    for d in &s.dimensions {
        t.row(vec![
            d.dimension.lower().into(),
            format!("{:.2}", d.expectation.value),
            format!("{:.2}", d.perception.value),
            est(Some(d.gap), 2),
            d.gap.n.to_string(),
        ]);
    }
    t
}

fn heatmap(r: &GapReport) -> Table {
    let channels: Vec<Channel> = Channel::ALL
        .iter()
        .copied()
        .filter(|c| r.groups.iter().any(|g| g.key[1].1 == GroupValue::Channel(*c)))
        .collect();
    let mut header = vec!["stage \\ channel".to_string()];
    header.extend(channels.iter().map(|c| c.as_str().to_string()));
    let mut t = Table::new(header);
    for st in JourneyStage::ALL {
        let row: Vec<String> = channels
            .iter()
            .map(|c| {
                r.groups
                    .iter()
                    .find(|g| g.key[0].1 == GroupValue::Stage(*st) && g.key[1].1 == GroupValue::Channel(*c))
                    .and_then(|g| g.summary.experience)
                    .map_or("·".into(), |e| format!("{:.2} ({})", e.value, e.n))
            })
            .collect();
        if row.iter().any(|c| c != "·") {
            let mut cells = vec![st.as_str().to_string()];
            cells.extend(row);
            t.row(cells);
        }
    }
    t
}

pub fn text(a: &Analysis, top: usize) -> String {
    let mut out = String::new();
    let r = &a.report;
    let i = &a.input;
    let _ = writeln!(out, "cxgap gap report — {}", i.file);
    let _ = writeln!(
        out,
        "records {}: {} applied, {} duplicate ids ignored, {} rejected; {} internal assessments",
        i.records, i.applied, i.duplicates, i.rejected, i.assessments
    );
    let from = r.from.map_or("first event".to_string(), |d| d.to_string());
    let _ = writeln!(out, "window {} ({from} … {}), 95% intervals, n = responses", r.window, r.as_of);
    if let Some(only) = crate::filter::describe(&a.filter) {
        let _ = writeln!(out, "only {only}");
    }
    out.push('\n');

    let _ = writeln!(out, "OVERALL ({} events)", r.overall.events);
    summary_block(&mut out, &r.overall);

    if !r.overall.dimensions.is_empty() {
        let _ = writeln!(out, "\nSERVQUAL GAPS (perception − expectation, 1–7; negative is a shortfall)");
        out.push_str(&dimension_table(&r.overall).render("  "));
    }

    for b in &a.breakdowns {
        if b.group_by == ["dimension"] || b.groups.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\nBY {}", b.group_by.join(" × ").to_uppercase());
        out.push_str(&group_table(b).render("  "));
    }

    let hm = heatmap(&a.heatmap);
    if !hm.is_empty() {
        let _ = writeln!(out, "\nEXPERIENCE HEATMAP (journey stage × channel: mean score 0–1 (n))");
        out.push_str(&hm.render("  "));
    }

    let delivery: Vec<_> =
        a.breakdowns.iter().filter(|b| b.group_by == ["touchpoint"]).flat_map(|b| &b.groups).collect();
    let mut t = Table::new(["touchpoint", "wait/promise", "SLA breached %", "n", "unresolved %", "mean wait s"]);
    for g in delivery {
        if let Some(d) = g.summary.delivery {
            t.row(vec![
                group_label(&g.key),
                est(d.wait_ratio, 2),
                est(pct(d.sla_breach_share), 1),
                n_of(d.sla_breach_share),
                est(pct(d.unresolved_share), 1),
                d.mean_wait_seconds.map_or("-".into(), |e| format!("{:.0}", e.value)),
            ]);
        }
    }
    if !t.is_empty() {
        let _ = writeln!(out, "\nDELIVERY GAP (promised vs actual)");
        out.push_str(&t.render("  "));
    }

    if !r.perception.is_empty() {
        let _ = writeln!(
            out,
            "\nPERCEPTION GAP (management − customers on the 0–1 scale; positive: the firm overrates itself)"
        );
        let mut t = Table::new(["touchpoint", "instrument", "management", "customers", "gap [95% CI]", "n"]);
        for p in &r.perception {
            t.row(vec![
                match p.journey_stage {
                    Some(s) => format!("{} ({})", p.touchpoint, s),
                    None => p.touchpoint.clone(),
                },
                p.instrument.name().into(),
                format!("{:.2} ({:.1})", p.internal, p.internal_native),
                p.customer
                    .zip(p.customer_native)
                    .map_or("no responses".into(), |(c, n)| format!("{:.2} ({:.1})", c.value, n.value)),
                est(p.gap, 2),
                n_of(p.gap),
            ]);
        }
        out.push_str(&t.render("  "));
    }

    if !r.consistency.is_empty() {
        let _ = writeln!(out, "\nCONSISTENCY GAP (best − worst channel experience within a scope)");
        let mut t = Table::new(["scope", "spread", "best", "worst", "channels", "p (best vs worst)"]);
        let mut rows: Vec<_> = r.consistency.iter().collect();
        rows.sort_by(|a, b| b.spread.total_cmp(&a.spread));
        for c in rows.into_iter().take(8) {
            t.row(vec![
                c.scope.clone(),
                format!("{:.3}", c.spread),
                c.best.as_str().into(),
                c.worst.as_str().into(),
                c.channels.len().to_string(),
                c.test.map_or("-".into(), |t| format!("{:.4}", t.p_value)),
            ]);
        }
        out.push_str(&t.render("  "));
    }

    let _ = writeln!(out, "\nWINDOWS (ending {})", r.as_of);
    let mut t = Table::new(["window", "events", "NPS [95% CI]", "CSAT%", "experience", "P−E gap"]);
    for w in &a.windows {
        let s = &w.overall;
        t.row(vec![
            w.window.to_string(),
            s.events.to_string(),
            est(s.nps.map(|n| n.wald), 1),
            s.csat_percent.map_or("-".into(), |e| format!("{:.1}", e.value)),
            s.experience.map_or("-".into(), |e| format!("{:.3}", e.value)),
            s.service_quality.map_or("-".into(), |e| format!("{:+.2}", e.value)),
        ]);
    }
    out.push_str(&t.render("  "));
    if let Some(c) = &a.nps_trend.comparison {
        let _ = writeln!(
            out,
            "  NPS last 30d {:.1} (n={}) vs previous 30d {:.1} (n={}): {:+.1}, z={:.2}, p={:.4}",
            c.current.value, c.current.n, c.previous.value, c.previous.n, c.difference, c.z, c.p_value
        );
    }

    if !a.at_risk.is_empty() {
        let _ = writeln!(out, "\nAT-RISK CUSTOMERS (top {top} by risk × value; drivers = contribution to log-odds)");
        if !a.filter.touchpoints.is_empty() {
            // The gap figures above are filtered by touchpoint; customers cannot be.
            let _ =
                writeln!(out, "(not filtered by touchpoint: {})", cxgap_domain::report::CUSTOMERS_KEEP_NO_TOUCHPOINTS);
        }
        let mut t =
            Table::new(["customer", "risk", "health", "value", "value at risk", "events", "top drivers"]).text_last();
        for c in &a.at_risk {
            t.row(vec![
                c.customer_id.clone(),
                format!("{:.0}%", c.risk * 100.0),
                format!("{:.0}", c.health),
                c.customer_value.map_or("-".into(), |v| format!("{v:.0}")),
                c.customer_value.map_or("-".into(), |v| format!("{:.0}", v * c.risk)),
                c.events.to_string(),
                c.drivers
                    .iter()
                    .take(3)
                    .map(|d| format!("{} {:+.2}", d.feature, d.contribution))
                    .collect::<Vec<_>>()
                    .join(", "),
            ]);
        }
        out.push_str(&t.render("  "));
    }
    out
}
