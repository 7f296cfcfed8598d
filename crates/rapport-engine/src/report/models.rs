//! The model sections of the report, drawn from the `customers`, `segments`,
//! `outcome_rates` and `forecasts` tables and `reports/models.json`: RFM grid and
//! segments, cluster profiles, the CLV distribution, the P(alive) matrix, churn ROC and
//! calibration, loyalty drivers, the behaviour mix, outcome rates and forecasts.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::svg::{escape, number, BarChart, Heatmap, IntervalChart, Line, LineChart};
use crate::results::{ActionsReport, Checked, ClusterReport, Fit, GapReport, LoyaltyReport, ModelsReport, RulesReport, TypeReliability};
use crate::session::{Personal, Session};
use crate::Result;
use rapport_store::schema::Table;

/// Rows of a query as optional text cells.
fn cells(ws: &Session<'_>, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
    ws.text_rows(sql, &Personal::Masked)
}

fn num(c: &Option<String>) -> f64 {
    c.as_deref().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN)
}

fn text(c: &Option<String>) -> String {
    c.clone().unwrap_or_default()
}

fn grid(ws: &Session<'_>, sql: &str, rows: &[&str], cols: &[&str]) -> Result<Vec<Vec<Option<f64>>>> {
    let mut m: BTreeMap<(String, String), f64> = BTreeMap::new();
    for r in cells(ws, sql)? {
        m.insert((text(&r[0]), text(&r[1])), num(&r[2]));
    }
    Ok(rows
        .iter()
        .map(|r| cols.iter().map(|c| m.get(&(r.to_string(), c.to_string())).copied()).collect())
        .collect())
}

fn tile(body: &mut String, label: &str, v: Option<f64>) {
    let shown = match v {
        Some(x) if !x.is_finite() => "–".to_string(),
        Some(x) if x.fract() != 0.0 => format!("{x:.3}"),
        Some(x) => number(x),
        None => "–".to_string(),
    };
    let _ = write!(
        body,
        r#"<div class="tile"><div class="v">{shown}</div><div class="k">{label}</div></div>"#
    );
}

/// A bar chart of one series from query rows of (label, value).
fn bars(id: &str, title: &str, series: &str, rows: &[Vec<Option<String>>]) -> String {
    BarChart {
        id,
        title,
        series: std::slice::from_ref(&series),
        rows: rows.iter().map(|r| (text(&r[0]), vec![num(&r[1])])).collect(),
        unit: "",
    }
    .render()
}

/// Appends the model sections (nothing when `rapport run` has not written its tables).
pub fn sections(ws: &Session<'_>, tables: &BTreeMap<String, u64>, models: Option<&ModelsReport>, body: &mut String) -> Result<()> {
    sections_of(ws, tables, models, None, body)
}

/// The model sections of one view of the dashboard (the report shows them all).
pub fn view_sections(
    ws: &Session<'_>,
    tables: &BTreeMap<String, u64>,
    models: Option<&ModelsReport>,
    view: super::View,
    body: &mut String,
) -> Result<()> {
    sections_of(ws, tables, models, Some(view), body)
}

fn sections_of(
    ws: &Session<'_>,
    tables: &BTreeMap<String, u64>,
    models: Option<&ModelsReport>,
    only: Option<super::View>,
    body: &mut String,
) -> Result<()> {
    use super::View;
    if only == Some(View::Quality) || !tables.contains_key(Table::Customers.name()) || !tables.contains_key(Table::Segments.name()) {
        return Ok(());
    }
    // An ingest since the last run rebuilt `customers` without the model columns: the
    // models are shown again once `rapport run` has refreshed them.
    let modelled = match ws.workspace().table_files(Table::Customers.name())?.first() {
        Some(part) => rapport_store::tables::part_schema(part)?.field_with_name("rfm_r").is_ok(),
        None => false,
    };
    if !modelled {
        body.push_str(
            "<section><h2>Models</h2><p class=\"note\">New data came in since the last <code>rapport run</code>: \
             run it again to refresh segments, scores, gaps and actions.</p></section>",
        );
        return Ok(());
    }
    let Some(models) = models else {
        body.push_str(
            "<section><h2>Models</h2><p class=\"note\">reports/models.json is missing or unreadable: run \
             <code>rapport run</code> again to show segments, scores, gaps and actions.</p></section>",
        );
        return Ok(());
    };
    let has = |t: Table| tables.contains_key(t.name());
    let want = |v: View| only.is_none_or(|o| o == v);
    if want(View::Segments) {
        segments(ws, models, body)?;
    }
    if want(View::Overview) {
        value(ws, models, body)?;
        churn(models, body);
    }
    if want(View::Segments) {
        behaviour(models, body);
    }
    if want(View::Gaps) && has(Table::Gaps) {
        gaps(ws, models, body)?;
    }
    if want(View::Actions) && has(Table::OutcomeRates) {
        outcome_rates(ws, body)?;
    }
    if want(View::Overview) && has(Table::Forecasts) {
        forecasts(ws, body)?;
    }
    if want(View::Actions) && has(Table::Recommendations) {
        recommendations(ws, models, body)?;
    }
    if want(View::Actions) && has(Table::Actions) {
        actions(ws, models, body)?;
    }
    if want(View::Actions) && has(Table::Uplift) {
        uplift(ws, body)?;
    }
    Ok(())
}

fn recommendations(ws: &Session<'_>, models: &ModelsReport, body: &mut String) -> Result<()> {
    body.push_str("<section><h2>Recommendations</h2>");
    let Fit::Fitted(r) = &models.recommendations else {
        body.push_str("<p class=\"note\">Not fitted.</p></section>");
        return Ok(());
    };
    let w = r.weights;
    let _ = write!(
        body,
        "<p class=\"note\">Model: {}; blend weights (chosen on the 90 days before the cut-off) item-kNN {:?}, ALS {:?}, bought-together {:?}, content {:?}. \
         Already-bought products are left out; each row says which model put it there.</p>",
        escape(&r.model),
        w.item_knn,
        w.als,
        w.co_purchase,
        w.content
    );
    let reasons = cells(
        ws,
        "SELECT reason, count(*) FROM recommendations GROUP BY reason ORDER BY count(*) DESC, reason",
    )?;
    body.push_str(&bars("recs-reasons", "Recommendations by source", "rows", &reasons));
    let top = cells(
        ws,
        "SELECT product_id, count(*) FROM recommendations WHERE rank <= 3 GROUP BY product_id ORDER BY count(*) DESC, product_id LIMIT 15",
    )?;
    body.push_str(&bars(
        "recs-top-products",
        "Most recommended products (in a customer's top 3)",
        "customers",
        &top,
    ));
    association_rules(&r.association_rules, body);
    body.push_str("</section>");
    Ok(())
}

/// The strongest "bought together" rules, by lift.
fn association_rules(ar: &RulesReport, body: &mut String) {
    if ar.rules.is_empty() {
        let _ = write!(
            body,
            "<p class=\"note\">No association rule reaches support {} and confidence {} over {} baskets.</p>",
            ar.min_support, ar.min_confidence, ar.orders
        );
    } else {
        let rows = ar
            .rules
            .iter()
            .take(15)
            .map(|x| {
                (
                    format!(
                        "{} → {} (conf {:.0} %, support {})",
                        x.antecedent.join(" + "),
                        x.consequent,
                        100.0 * x.confidence,
                        x.support_count
                    ),
                    vec![(x.lift * 10.0).round() / 10.0],
                )
            })
            .collect();
        body.push_str(
            &BarChart {
                id: "association-rules",
                title: "Bought together: association rules by lift",
                series: &["lift"],
                rows,
                unit: "×",
            }
            .render(),
        );
    }
}

fn actions(ws: &Session<'_>, models: &ModelsReport, body: &mut String) -> Result<()> {
    let a = &models.actions;
    let _ = write!(
        body,
        "<section><h2>Next-best actions</h2><p class=\"note\">Campaign {}: each action keeps a random {:.0} % control group (seed {}). \
         Marketing actions need a granted marketing consent: {} customers have none and get no marketing action. \
         At most {} action(s) per customer; customers contacted in the last {} days are left out ({}).</p>",
        escape(&a.campaign_id),
        100.0 * a.control_share,
        a.seed,
        number(a.customers_without_marketing_consent as f64),
        a.max_actions_per_customer,
        a.cooldown_days,
        number(a.customers_in_cooldown as f64),
    );
    let rows = cells(
        ws,
        r#"SELECT action, min(priority), sum(CASE WHEN "group" = 'treatment' THEN 1 ELSE 0 END), sum(CASE WHEN "group" = 'control' THEN 1 ELSE 0 END)
           FROM actions GROUP BY action ORDER BY min(priority)"#,
    )?;
    body.push_str(
        &BarChart {
            id: "actions-audience",
            title: "Audience per action (priority order)",
            series: &["treatment", "control"],
            rows: rows.iter().map(|r| (text(&r[0]), vec![num(&r[2]), num(&r[3])])).collect(),
            unit: "",
        }
        .render(),
    );
    body.push_str(&held_back(a));
    body.push_str("</section>");
    Ok(())
}

/// Per rule, the customers it matched: acted on, or held back by consent or its cap.
fn held_back(a: &ActionsReport) -> String {
    let blocked: Vec<(String, Vec<f64>)> = a
        .rules
        .iter()
        .map(|r| {
            let counts = [
                r.treatment + r.control,
                r.blocked_no_marketing_consent,
                r.blocked_no_channel_consent,
                r.capped,
            ];
            (r.action.clone(), counts.iter().map(|&k| k as f64).collect())
        })
        .collect();
    BarChart {
        id: "actions-consent",
        title: "Customers each rule matched: acted on vs held back by consent or caps",
        series: &["acted on", "no marketing consent", "no channel consent", "over the cap"],
        rows: blocked,
        unit: "",
    }
    .render()
}

fn uplift(ws: &Session<'_>, body: &mut String) -> Result<()> {
    body.push_str(
        "<section><h2>Did it work? Uplift against control groups</h2><p class=\"note\">Conversion rate of the treated minus that of the control group, \
         with Newcombe's 95 % interval: green worked, red harmed, grey not shown either way.</p>",
    );
    let rows = cells(
        ws,
        "SELECT campaign_id, action, uplift, ci_low, ci_high, treated, control FROM uplift WHERE uplift IS NOT NULL ORDER BY campaign_id, uplift DESC",
    )?;
    if rows.is_empty() {
        body.push_str("<p class=\"note\">No campaign outcomes yet: ingest a <code>campaign_outcomes</code> file, then run <code>rapport uplift</code>.</p>");
    }
    body.push_str(
        &IntervalChart {
            id: "uplift",
            title: "Uplift in conversion, percentage points",
            rows: rows
                .iter()
                .map(|r| {
                    (
                        format!(
                            "{} · {} (n={}/{})",
                            text(&r[0]),
                            text(&r[1]),
                            number(num(&r[5])),
                            number(num(&r[6]))
                        ),
                        num(&r[2]),
                        num(&r[3]),
                        num(&r[4]),
                    )
                })
                .collect(),
            scale: 100.0,
            unit: " pts",
        }
        .render(),
    );
    body.push_str("</section>");
    Ok(())
}

fn segments(ws: &Session<'_>, models: &ModelsReport, body: &mut String) -> Result<()> {
    body.push_str("<section><h2>Segments</h2>");
    let _ = write!(
        body,
        r#"<p class="note">As of {}: RFM quintile scores (5 = most recent, most frequent, highest spend) and the named segments.</p>"#,
        escape(&models.as_of)
    );
    let scores = ["5", "4", "3", "2", "1"];
    let f_scores = ["1", "2", "3", "4", "5"];
    body.push_str(
        &Heatmap {
            id: "rfm-grid",
            title: "Customers by recency (rows) and frequency (columns) score",
            x_title: "frequency score",
            y_title: "recency score",
            columns: f_scores.iter().map(|s| format!("F{s}")).collect(),
            rows: scores.iter().map(|s| format!("R{s}")).collect(),
            values: grid(
                ws,
                "SELECT CAST(rfm_r AS VARCHAR), CAST(rfm_f AS VARCHAR), count(*) FROM customers WHERE rfm_r IS NOT NULL GROUP BY 1, 2",
                &scores,
                &f_scores,
            )?,
        }
        .render(),
    );
    let seg = cells(
        ws,
        "SELECT name, customers, revenue_share FROM segments WHERE kind = 'rfm' ORDER BY customers DESC",
    )?;
    body.push_str(&bars("rfm-segments", "RFM segments: customers", "customers", &seg));
    body.push_str(
        &BarChart {
            id: "rfm-revenue",
            title: "RFM segments: share of revenue",
            series: &["revenue share (%)"],
            rows: seg
                .iter()
                .map(|r| (text(&r[0]), vec![(num(&r[2]) * 1000.0).round() / 10.0]))
                .collect(),
            unit: " %",
        }
        .render(),
    );
    clusters(ws, models, body)?;
    body.push_str("</section>");
    Ok(())
}

/// The cluster profiles: how they were found, their sizes, and a table of their means.
fn clusters(ws: &Session<'_>, models: &ModelsReport, body: &mut String) -> Result<()> {
    let clusters = cells(
        ws,
        "SELECT name, customers, mean_recency_days, mean_orders, mean_revenue, mean_avg_order_value, mean_tenure_days,
                description
         FROM segments WHERE kind = 'cluster' ORDER BY segment_id",
    )?;
    if clusters.is_empty() {
        return Ok(());
    }
    let _ = match &models.kmeans {
        Some(ClusterReport::Dbscan(km)) => write!(
            body,
            r#"<p class="note">DBSCAN (eps {}, min points {}): {} clusters, {:.1} % of buyers are noise (no cluster).</p>"#,
            km.eps,
            km.min_points,
            km.k,
            100.0 * km.noise_share
        ),
        Some(ClusterReport::Kmeans(km)) => write!(
            body,
            r#"<p class="note">k-means on log-transformed, standardised behaviour: k = {} (at least {}), chosen by {}; silhouette {:.3}.</p>"#,
            km.k,
            km.k_min,
            escape(&km.criterion),
            km.silhouette
        ),
        None => Ok(()),
    };
    body.push_str(&bars("kmeans-cluster-sizes", "Clusters: customers", "customers", &clusters));
    body.push_str("<table><tr><th>cluster</th><th>customers</th><th>recency (days)</th><th>orders</th><th>revenue</th><th>avg order</th><th>tenure (days)</th><th>what sets it apart</th></tr>");
    for r in &clusters {
        let _ = write!(body, "<tr><td>{}</td>", escape(&text(&r[0])));
        for c in &r[1..7] {
            let _ = write!(body, "<td class=\"num\">{}</td>", number((num(c) * 10.0).round() / 10.0));
        }
        let _ = write!(body, "<td>{}</td></tr>", escape(&text(&r[7])));
    }
    body.push_str("</table>");
    Ok(())
}

fn value(ws: &Session<'_>, models: &ModelsReport, body: &mut String) -> Result<()> {
    body.push_str("<section><h2>Customer value</h2><div class=\"tiles\">");
    let bg = models.bgnbd.as_ref().and_then(|f| f.params());
    for (label, v) in [
        ("BG/NBD r", bg.map(|p| p.r)),
        ("α", bg.map(|p| p.alpha)),
        ("a", bg.map(|p| p.a)),
        ("b", bg.map(|p| p.b)),
    ] {
        tile(body, label, v);
    }
    tile(body, "Gamma-Gamma p", models.gamma_gamma.params().map(|p| p.p));
    body.push_str("</div>");
    clv_distribution(ws, body)?;
    p_alive_matrix(ws, body)?;
    body.push_str("</section>");
    Ok(())
}

/// Customers and their total CLV per band of CLV (fixed, log-spaced bands).
fn clv_distribution(ws: &Session<'_>, body: &mut String) -> Result<()> {
    let bins = cells(
        ws,
        "SELECT CASE WHEN clv < 10 THEN 'a: < 10' WHEN clv < 50 THEN 'b: 10–50' WHEN clv < 100 THEN 'c: 50–100'
                     WHEN clv < 250 THEN 'd: 100–250' WHEN clv < 500 THEN 'e: 250–500' WHEN clv < 1000 THEN 'f: 500–1,000'
                     WHEN clv < 5000 THEN 'g: 1,000–5,000' ELSE 'h: ≥ 5,000' END AS bin, count(*), sum(clv)
         FROM customers WHERE clv IS NOT NULL GROUP BY 1 ORDER BY 1",
    )?;
    let label = |r: &Vec<Option<String>>| text(&r[0]).split_once(": ").map(|(_, b)| b.to_string()).unwrap_or_default();
    body.push_str(
        &BarChart {
            id: "clv-distribution",
            title: "CLV distribution: customers per band",
            series: &["customers"],
            rows: bins.iter().map(|r| (label(r), vec![num(&r[1])])).collect(),
            unit: "",
        }
        .render(),
    );
    body.push_str(
        &BarChart {
            id: "clv-value",
            title: "CLV distribution: total value per band",
            series: &["CLV"],
            rows: bins.iter().map(|r| (label(r), vec![num(&r[2]).round()])).collect(),
            unit: "",
        }
        .render(),
    );
    Ok(())
}

/// Mean P(alive) by days since the last order and number of orders.
fn p_alive_matrix(ws: &Session<'_>, body: &mut String) -> Result<()> {
    let rec = ["a: 0–30", "b: 31–90", "c: 91–180", "d: 181–365", "e: > 365"];
    let freq = ["1", "2", "3", "4", "5–9", "10+"];
    let values = grid(
        ws,
        "SELECT CASE WHEN recency_days <= 30 THEN 'a: 0–30' WHEN recency_days <= 90 THEN 'b: 31–90'
                     WHEN recency_days <= 180 THEN 'c: 91–180' WHEN recency_days <= 365 THEN 'd: 181–365' ELSE 'e: > 365' END,
                CASE WHEN orders >= 10 THEN '10+' WHEN orders >= 5 THEN '5–9' ELSE CAST(CAST(orders AS BIGINT) AS VARCHAR) END,
                avg(p_alive)
         FROM customers WHERE p_alive IS NOT NULL GROUP BY 1, 2",
        &rec,
        &freq,
    )?;
    body.push_str(
        &Heatmap {
            id: "p-alive-matrix",
            title: "Mean P(alive) by days since the last order (rows) and orders (columns)",
            x_title: "orders",
            y_title: "days since last order",
            columns: freq.iter().map(|s| s.to_string()).collect(),
            rows: rec.iter().map(|s| s[3..].to_string()).collect(),
            values,
        }
        .render(),
    );
    Ok(())
}

fn churn(models: &ModelsReport, body: &mut String) {
    body.push_str("<section><h2>Churn</h2>");
    let c = match &models.churn {
        Fit::Fitted(c) => c,
        Fit::Skipped(s) => {
            let _ = write!(body, "<p class=\"note\">{}</p></section>", escape(&s.message));
            return;
        }
    };
    let _ = write!(
        body,
        r#"<p class="note">Label: {}. Trained at {}, validated at {}; model: {}.</p><div class="tiles">"#,
        escape(&c.label),
        escape(&c.train_cutoff),
        escape(&c.validation_cutoff),
        escape(&c.model)
    );
    for (label, v) in [
        ("validation AUC", c.auc),
        ("precision", c.precision),
        ("recall", c.recall),
        ("F1", c.f1),
        ("churn rate", c.validation_churn_rate),
    ] {
        tile(body, label, Some(v));
    }
    body.push_str("</div>");
    let roc = c.roc.iter().map(|p| (p[0], p[1])).collect();
    let roc_name = format!("{} (AUC {:.3})", c.model, c.auc);
    body.push_str(&unit_square_chart(
        ("churn-roc", "Churn ROC curve (validation window)"),
        ("false positive rate", "true positive rate"),
        &roc_name,
        roc,
    ));
    let cal = c.calibration.iter().map(|b| (b.predicted, b.observed)).collect();
    body.push_str(&unit_square_chart(
        (
            "churn-calibration",
            "Churn calibration: observed rate by predicted probability (deciles)",
        ),
        ("predicted churn probability", "observed churn rate"),
        "observed",
        cal,
    ));
    if let Fit::Fitted(l) = &models.loyalty {
        loyalty_drivers(l, body);
    }
    body.push_str("</section>");
}

/// One line on the unit square with the diagonal (a ROC or calibration curve): `(id,
/// title)`, `(x title, y title)`.
fn unit_square_chart((id, title): (&str, &str), (x_title, y_title): (&str, &str), name: &str, points: Vec<(f64, f64)>) -> String {
    LineChart {
        id,
        title,
        x_title,
        y_title,
        lines: vec![Line {
            name: name.into(),
            points,
            band: None,
            dashed: false,
        }],
        x_ticks: (0..=4)
            .map(|k| (f64::from(k) / 4.0, format!("{:.2}", f64::from(k) / 4.0)))
            .collect(),
        diagonal: true,
    }
    .render()
}

/// The loyalty model's fit and its ten largest effects.
fn loyalty_drivers(l: &LoyaltyReport, body: &mut String) {
    let mut coef: Vec<(String, f64, f64)> = l.coefficients.iter().map(|(k, v)| (k.clone(), v.estimate, v.std_error)).collect();
    coef.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
    let _ = write!(
        body,
        r#"<p class="note">Loyalty score: {} — R² {:.3}, MSE {:.4}. Largest effects per standard deviation (± standard error):</p>"#,
        escape(&l.target),
        l.r2,
        l.mse
    );
    body.push_str(
        &BarChart {
            id: "loyalty-drivers",
            title: "Loyalty drivers (|coefficient|; sign in the label)",
            series: &["|coefficient|"],
            rows: coef
                .iter()
                .take(10)
                .map(|(k, e, se)| {
                    (
                        format!("{k} ({}{:.3} ± {:.3})", if *e >= 0.0 { "+" } else { "−" }, e.abs(), se),
                        vec![e.abs()],
                    )
                })
                .collect(),
            unit: "",
        }
        .render(),
    );
}

fn behaviour(models: &ModelsReport, body: &mut String) {
    let Fit::Fitted(b) = &models.behaviour else {
        return;
    };
    body.push_str("<section><h2>Next-period behaviour</h2>");
    let _ = write!(
        body,
        r#"<p class="note">Softmax regression over next-window behaviour classes: validation log-loss {:.3} against {:.3} for the class frequencies alone; accuracy {:.3}.</p>"#,
        b.log_loss, b.baseline_log_loss, b.accuracy
    );
    body.push_str(
        &BarChart {
            id: "behaviour-calibration",
            title: "Behaviour classes: mean predicted probability vs observed share (validation)",
            series: &["%"],
            rows: b
                .calibration
                .iter()
                .flat_map(|c| {
                    let pct = |v: f64| (v * 1000.0).round() / 10.0;
                    [
                        (format!("{}: predicted", c.class), vec![pct(c.mean_predicted)]),
                        (format!("{}: observed", c.class), vec![pct(c.observed)]),
                    ]
                })
                .collect(),
            unit: " %",
        }
        .render(),
    );
    body.push_str("</section>");
}

fn gaps(ws: &Session<'_>, models: &ModelsReport, body: &mut String) -> Result<()> {
    body.push_str("<section><h2>Information gaps</h2><p class=\"note\">Where what customers say differs from what they do (Δ = reported / predicted), and what groups do not know that comparable customers use. A gap is shown only with enough behaviour behind it and evidence ≥ ");
    let g = &models.gaps;
    let _ = write!(body, "{}.</p>", g.evidence_threshold);
    for (what, why) in &g.not_computed {
        let _ = write!(body, "<p class=\"note\">Not computed — {}: {}.</p>", escape(what), escape(why));
    }
    judged_table(g, body);
    gap_heatmap(ws, body)?;
    top_knowledge_gaps(ws, body)?;
    gap_examples(ws, body)?;
    body.push_str("</section>");
    Ok(())
}

/// What was judged, what was not and why, and how the evidence held up against the
/// later behaviour (`gaps.reliability`).
fn judged_table(g: &GapReport, body: &mut String) {
    let judged = g.judged.each();
    if !judged.is_empty() {
        body.push_str("<table><tr><th>gap</th><th>statements judged</th><th>gaps</th><th>share misreported (fitted)</th><th>not judged</th><th>reported earlier, still reported</th></tr>");
        for (t, j) in judged {
            let not_judged: Vec<String> = g
                .not_judged
                .get(t)
                .into_iter()
                .flatten()
                .map(|(why, n)| format!("{n} ({why})"))
                .collect();
            let held = match g.reliability.as_ref().map(|r| &r.gaps) {
                Some(Checked::ByType(by)) => match by.get(t) {
                    Some(TypeReliability::Checked(r)) => format!("{} of {}", r.still_reported, r.reported_at_cutoff),
                    _ => "–".into(),
                },
                _ => "–".into(),
            };
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{:.3}</td><td>{}</td><td>{}</td></tr>",
                escape(t),
                j.statements,
                j.gaps,
                j.misreport_share,
                escape(&not_judged.join("; ")),
                escape(&held)
            );
        }
        body.push_str("</table>");
    }
}

/// The share of each RFM segment with a gap, by gap type.
fn gap_heatmap(ws: &Session<'_>, body: &mut String) -> Result<()> {
    let types = ["frequency", "category", "satisfaction", "knowledge", "profile"];
    let segs: Vec<String> = cells(
        ws,
        "SELECT DISTINCT rfm_segment FROM customers WHERE rfm_segment IS NOT NULL ORDER BY 1",
    )?
    .iter()
    .map(|r| text(&r[0]))
    .collect();
    let seg_refs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let values = grid(
        ws,
        "SELECT c.rfm_segment, g.gap_type, 100.0 * count(DISTINCT g.customer_id) / max(s.n)
         FROM gaps g JOIN customers c ON g.customer_id = c.customer_id
         JOIN (SELECT rfm_segment, count(*) AS n FROM customers GROUP BY 1) s ON s.rfm_segment = c.rfm_segment
         GROUP BY 1, 2",
        &seg_refs,
        &types,
    )?;
    body.push_str(
        &Heatmap {
            id: "gap-heatmap",
            title: "Share of each RFM segment with a gap, by gap type (%)",
            x_title: "gap type",
            y_title: "segment",
            columns: types.iter().map(|s| s.to_string()).collect(),
            rows: segs.clone(),
            values,
        }
        .render(),
    );
    Ok(())
}

/// The knowledge gaps that reach the most customers.
fn top_knowledge_gaps(ws: &Session<'_>, body: &mut String) -> Result<()> {
    let top = cells(
        ws,
        "SELECT segment, subject, segment_rate, reference_rate, customers_affected FROM knowledge_gaps
         WHERE rank = 1 AND q_value < 0.05 AND gap < 0 ORDER BY customers_affected DESC LIMIT 10",
    )?;
    body.push_str(
        &BarChart {
            id: "top-knowledge-gaps",
            title: "Top knowledge gaps: customers affected (segment rate vs everyone else)",
            series: &["customers affected"],
            rows: top
                .iter()
                .map(|r| {
                    (
                        format!(
                            "{} — {} ({:.0} % vs {:.0} %)",
                            text(&r[0]),
                            text(&r[1]),
                            100.0 * num(&r[2]),
                            100.0 * num(&r[3])
                        ),
                        vec![num(&r[4])],
                    )
                })
                .collect(),
            unit: "",
        }
        .render(),
    );
    Ok(())
}

/// The two gaps of each type with the strongest evidence, in words.
fn gap_examples(ws: &Session<'_>, body: &mut String) -> Result<()> {
    let examples = cells(
        ws,
        "SELECT gap_type, customer_id, subject, direction, reported_text, observed_text, evidence FROM (
           SELECT *, row_number() OVER (PARTITION BY gap_type ORDER BY evidence DESC, customer_id) AS k FROM gaps) WHERE k <= 2
         ORDER BY gap_type, k",
    )?;
    body.push_str("<table><tr><th>gap</th><th>customer</th><th>says</th><th>does</th><th>evidence</th></tr>");
    for r in &examples {
        let _ = write!(
            body,
            "<tr><td>{} ({})</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{:.3}</td></tr>",
            escape(&text(&r[0])),
            escape(&text(&r[3])),
            escape(&text(&r[1])),
            escape(&text(&r[4])),
            escape(&text(&r[5])),
            num(&r[6])
        );
    }
    body.push_str("</table>");
    Ok(())
}

fn outcome_rates(ws: &Session<'_>, body: &mut String) -> Result<()> {
    body.push_str("<section><h2>Outcome rates by segment</h2><p class=\"note\">Beta-Binomial posterior mean with its 95 % credible interval; small segments are pulled toward the overall rate.</p>");
    let rows = cells(
        ws,
        "SELECT outcome, segment, rate, lower, upper, customers FROM outcome_rates ORDER BY outcome, rate DESC",
    )?;
    let mut by: BTreeMap<String, Vec<(String, Vec<f64>)>> = BTreeMap::new();
    for r in &rows {
        by.entry(text(&r[0])).or_default().push((
            format!(
                "{} ({:.1}–{:.1} %, n={})",
                text(&r[1]),
                num(&r[3]) * 100.0,
                num(&r[4]) * 100.0,
                number(num(&r[5]))
            ),
            vec![(num(&r[2]) * 1000.0).round() / 10.0],
        ));
    }
    for (outcome, rows) in by {
        let id = format!("outcome-{outcome}");
        let title = format!("P({outcome} | segment), %");
        body.push_str(
            &BarChart {
                id: &id,
                title: &title,
                series: &["rate %"],
                rows,
                unit: " %",
            }
            .render(),
        );
    }
    body.push_str("</section>");
    Ok(())
}

fn forecasts(ws: &Session<'_>, body: &mut String) -> Result<()> {
    body.push_str("<section><h2>Forecasts</h2><p class=\"note\">Weekly totals with a 12-week damped-trend exponential-smoothing forecast and its 95 % prediction interval.</p>");
    for metric in ["orders", "revenue"] {
        let rows = cells(
            ws,
            &format!(
                "SELECT CAST(period_start AS VARCHAR) AS week, actual, forecast, lower, upper FROM forecasts
                 WHERE series = 'all' AND metric = '{metric}' ORDER BY period_start"
            ),
        )?;
        if !rows.is_empty() {
            body.push_str(&forecast_chart(metric, &rows));
        }
    }
    body.push_str("</section>");
    Ok(())
}

/// One metric's weekly actuals, then its forecast with the interval as a band, from
/// rows of (week, actual, forecast, lower, upper).
fn forecast_chart(metric: &str, rows: &[Vec<Option<String>>]) -> String {
    let actual: Vec<(f64, f64)> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r[1].is_some())
        .map(|(t, r)| (t as f64, num(&r[1])))
        .collect();
    let future: Vec<usize> = (0..rows.len()).filter(|&t| rows[t][1].is_none()).collect();
    let start = future.first().copied().unwrap_or(rows.len()).saturating_sub(1);
    let forecast: Vec<(f64, f64)> = (start..rows.len()).map(|t| (t as f64, num(&rows[t][2]))).collect();
    let band: Vec<(f64, f64, f64)> = future.iter().map(|&t| (t as f64, num(&rows[t][3]), num(&rows[t][4]))).collect();
    let step = (rows.len() / 6).max(1);
    let ticks = (0..rows.len()).step_by(step).map(|t| (t as f64, text(&rows[t][0]))).collect();
    let id = format!("forecast-{metric}");
    let title = format!("Weekly {metric}: actual and forecast");
    let line = |name: &str, points, band, dashed| Line {
        name: name.into(),
        points,
        band,
        dashed,
    };
    LineChart {
        id: &id,
        title: &title,
        x_title: "week starting",
        y_title: metric,
        lines: vec![
            line("actual", actual, None, false),
            line("forecast (95 % interval)", forecast, Some(band), true),
        ],
        x_ticks: ticks,
        diagonal: false,
    }
    .render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Coefficient;

    #[test]
    fn tiles_show_counts_grouped_fractions_to_three_places_and_a_dash_for_nothing() {
        let mut body = String::new();
        tile(&mut body, "customers", Some(12345.0));
        tile(&mut body, "AUC", Some(0.83456));
        tile(&mut body, "r", Some(f64::NAN));
        tile(&mut body, "b", None);
        let shown: Vec<&str> = body
            .split("<div class=\"v\">")
            .skip(1)
            .map(|t| &t[..t.find('<').unwrap()])
            .collect();
        assert_eq!(shown, ["12,345", "0.835", "–", "–"]);
    }

    #[test]
    fn the_judged_table_says_what_was_not_judged_and_unchecked_evidence_is_a_dash() {
        let g: GapReport = serde_json::from_value(serde_json::json!({
            "surveyed_customers": 10, "evidence_threshold": 0.9, "min_tenure_days": 90,
            "gaps": {"frequency:over": 2}, "profile_gaps": 0, "knowledge_gaps": [], "not_computed": {},
            "judged": {"frequency": {"statements": 8, "gaps": 2, "misreport_share": 0.25, "em_iterations": 4}},
            "not_judged": {"frequency": {"history too short": 3, "answer not a rate": 1}}
        }))
        .unwrap();
        let mut body = String::new();
        judged_table(&g, &mut body);
        assert!(
            body.contains("<tr><td>frequency</td><td class=\"num\">8</td><td class=\"num\">2</td><td class=\"num\">0.250</td><td>1 (answer not a rate); 3 (history too short)</td><td>–</td></tr>"),
            "{body}"
        );
        let none: GapReport = serde_json::from_value(serde_json::json!({
            "surveyed_customers": 0, "evidence_threshold": 0.9, "min_tenure_days": 90, "gaps": {}, "profile_gaps": 0,
            "knowledge_gaps": [], "not_computed": {}, "judged": {}, "not_judged": {}
        }))
        .unwrap();
        let mut empty = String::new();
        judged_table(&none, &mut empty);
        assert_eq!(empty, "", "no table without a judged statement");
    }

    #[test]
    fn loyalty_drivers_are_the_ten_largest_effects_with_their_sign() {
        let coefficients = (0..12)
            .map(|i| {
                let estimate = if i % 2 == 0 { f64::from(i) } else { -f64::from(i) };
                (format!("x{i}"), Coefficient { estimate, std_error: 0.5 })
            })
            .collect();
        let l = LoyaltyReport {
            target: "repeat share".into(),
            indicators: vec![],
            customers: 100,
            r2: 0.4,
            mse: 0.05,
            intercept: 0.0,
            coefficients,
            note: String::new(),
        };
        let mut body = String::new();
        loyalty_drivers(&l, &mut body);
        let labels: Vec<&str> = body
            .split("text-anchor=\"end\">")
            .skip(1)
            .map(|t| &t[..t.find('<').unwrap()])
            .collect();
        assert_eq!(labels.len(), 10);
        assert_eq!(labels[0], "x11 (−11.000 ± 0.500)");
        assert_eq!(labels[1], "x10 (+10.000 ± 0.500)");
        assert!(!labels.iter().any(|l| l.starts_with("x1 ") || l.starts_with("x0 ")));
        assert!(body.contains("R² 0.400, MSE 0.0500"));
    }

    #[test]
    fn a_unit_square_chart_has_the_diagonal_and_its_line() {
        let svg = unit_square_chart(
            ("roc", "ROC"),
            ("fpr", "tpr"),
            "gbt (AUC 0.800)",
            vec![(0.0, 0.0), (0.2, 0.7), (1.0, 1.0)],
        );
        assert!(svg.starts_with(r#"<svg class="chart" data-chart="roc""#));
        assert!(svg.contains(r#"stroke-dasharray="4 4""#), "the diagonal");
        assert!(svg.contains("<title>gbt (AUC 0.800)</title>"));
        assert_eq!(svg.matches("class=\"line\"").count(), 1);
    }
}
