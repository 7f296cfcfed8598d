//! Did it work? The `uplift` table from `campaign_outcomes`: per campaign and action, the
//! customers treated and held back, their conversion rates, the difference and
//! Newcombe's 95 % interval for it (`rapport_model::uplift`), plus revenue per customer.
//!
//! The unit is the customer: a customer listed twice under one campaign, action and
//! group counts once, converted if any of their rows converted. A missing `converted`
//! counts as not converted; a customer found in both groups of one action is counted in
//! each (and reported in `customers_in_both_groups`, since it means the audience was
//! not split cleanly).

use datafusion::arrow::record_batch::RecordBatch;

use rapport_model::uplift::newcombe;
use rapport_store::schema::Table;
use rapport_store::Workspace;

use crate::columns::Columns;
use crate::results::UpliftReport;
use crate::session::{from_micros, micros, text_rows, Personal, Session};
use crate::Result;

#[derive(Debug, Clone, PartialEq)]
pub struct UpliftRow {
    pub campaign_id: String,
    pub action: String,
    pub treated: u64,
    pub control: u64,
    pub treated_conversions: u64,
    pub control_conversions: u64,
    pub treated_rate: Option<f64>,
    pub control_rate: Option<f64>,
    pub uplift: Option<f64>,
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub treated_revenue_per_customer: Option<f64>,
    pub control_revenue_per_customer: Option<f64>,
    pub customers_in_both_groups: u64,
}

impl UpliftRow {
    /// "worked" (interval above 0), "harmed" (below 0), "unclear" or "no control".
    pub fn verdict(&self) -> &'static str {
        match (self.ci_low, self.ci_high) {
            (Some(l), _) if l > 0.0 => "worked",
            (_, Some(h)) if h < 0.0 => "harmed",
            (Some(_), Some(_)) => "unclear",
            _ => "no control group",
        }
    }
}

/// Per campaign and action: customers and conversions in each group, revenue per
/// group, and customers found in both groups (the rows a `campaign_outcomes` table
/// allows to compare).
fn outcomes_sql() -> String {
    format!(
        r#"WITH per AS (
         SELECT campaign_id, action, lower("group") AS g, customer_id,
                max(CASE WHEN converted THEN 1 ELSE 0 END) AS conv,
                sum({rev_micros}) AS rev_micros
         FROM campaign_outcomes GROUP BY campaign_id, action, lower("group"), customer_id),
       both_groups AS (
         SELECT campaign_id, action, count(*) AS both_n FROM (
           SELECT campaign_id, action, customer_id FROM per GROUP BY campaign_id, action, customer_id
           HAVING count(DISTINCT g) > 1) GROUP BY campaign_id, action)
       SELECT p.campaign_id, p.action,
              sum(CASE WHEN g = 'treatment' THEN 1 ELSE 0 END),
              sum(CASE WHEN g = 'control' THEN 1 ELSE 0 END),
              sum(CASE WHEN g = 'treatment' THEN conv ELSE 0 END),
              sum(CASE WHEN g = 'control' THEN conv ELSE 0 END),
              {treated_rev},
              {control_rev},
              coalesce(max(b.both_n), 0)
       FROM per p LEFT JOIN both_groups b ON p.campaign_id = b.campaign_id AND p.action = b.action
       GROUP BY p.campaign_id, p.action ORDER BY p.campaign_id, p.action"#,
        // Money in micro-units, so sums do not depend on the plan's parallelism.
        rev_micros = micros("coalesce(revenue, 0.0)"),
        treated_rev = from_micros("sum(CASE WHEN g = 'treatment' THEN rev_micros ELSE 0 END)"),
        control_rev = from_micros("sum(CASE WHEN g = 'control' THEN rev_micros ELSE 0 END)"),
    )
}

/// Computes the rows from the workspace's `campaign_outcomes` (none without it).
pub fn compute(session: &Session<'_>) -> Result<Vec<UpliftRow>> {
    if !session.workspace().has(Table::CampaignOutcomes)? {
        return Ok(Vec::new());
    }
    let rows = session.text_rows(&outcomes_sql(), &Personal::Stored)?;
    let num = |s: &Option<String>| s.as_deref().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    Ok(rows
        .iter()
        .map(|r| {
            let (nt, nc, xt, xc) = (num(&r[2]), num(&r[3]), num(&r[4]), num(&r[5]));
            let u = newcombe(xt, nt, xc, nc, 0.95);
            let per = |rev: f64, n: f64| (n > 0.0).then(|| rev / n);
            UpliftRow {
                campaign_id: r[0].clone().unwrap_or_default(),
                action: r[1].clone().unwrap_or_default(),
                treated: nt as u64,
                control: nc as u64,
                treated_conversions: xt as u64,
                control_conversions: xc as u64,
                treated_rate: (nt > 0.0).then(|| xt / nt),
                control_rate: (nc > 0.0).then(|| xc / nc),
                uplift: u.map(|u| u.uplift),
                ci_low: u.map(|u| u.ci_low),
                ci_high: u.map(|u| u.ci_high),
                treated_revenue_per_customer: per(num(&r[6]), nt),
                control_revenue_per_customer: per(num(&r[7]), nc),
                customers_in_both_groups: num(&r[8]) as u64,
            }
        })
        .collect())
}

pub fn report(rows: &[UpliftRow]) -> Vec<UpliftReport> {
    rows.iter()
        .map(|r| UpliftReport {
            campaign_id: r.campaign_id.clone(),
            action: r.action.clone(),
            treated: r.treated,
            control: r.control,
            treated_rate: r.treated_rate,
            control_rate: r.control_rate,
            uplift: r.uplift,
            ci_low: r.ci_low,
            ci_high: r.ci_high,
            verdict: r.verdict().to_string(),
            customers_in_both_groups: r.customers_in_both_groups,
        })
        .collect()
}

pub fn batch(rows: &[UpliftRow]) -> Result<RecordBatch> {
    let count = |f: fn(&UpliftRow) -> u64| rows.iter().map(move |r| Some(f(r) as i64));
    let mut c = Columns::default();
    c.text("campaign_id", false, rows.iter().map(|r| Some(r.campaign_id.as_str())));
    c.text("action", false, rows.iter().map(|r| Some(r.action.as_str())));
    c.ints("treated", false, count(|r| r.treated));
    c.ints("control", false, count(|r| r.control));
    c.floats("treated_rate", true, rows.iter().map(|r| r.treated_rate));
    c.floats("control_rate", true, rows.iter().map(|r| r.control_rate));
    c.floats("uplift", true, rows.iter().map(|r| r.uplift));
    c.floats("ci_low", true, rows.iter().map(|r| r.ci_low));
    c.floats("ci_high", true, rows.iter().map(|r| r.ci_high));
    c.ints("treated_conversions", false, count(|r| r.treated_conversions));
    c.ints("control_conversions", false, count(|r| r.control_conversions));
    c.floats(
        "treated_revenue_per_customer",
        true,
        rows.iter().map(|r| r.treated_revenue_per_customer),
    );
    c.floats(
        "control_revenue_per_customer",
        true,
        rows.iter().map(|r| r.control_revenue_per_customer),
    );
    c.bools(
        "significant",
        false,
        rows.iter().map(|r| Some(matches!(r.verdict(), "worked" | "harmed"))),
    );
    c.text("verdict", false, rows.iter().map(|r| Some(r.verdict())));
    c.finish()
}

/// Recomputes the `uplift` table after new outcomes were ingested, without rerunning
/// the models; updates models.json's `uplift` key and the report. Returns the rows.
pub fn refresh(ws: &Workspace) -> Result<Vec<UpliftRow>> {
    let rows = compute(&Session::new(ws))?;
    let b = batch(&rows)?;
    let mut txn = ws.begin("uplift")?;
    txn.replace(Table::Uplift.name());
    txn.write_part(Table::Uplift.name(), b.schema(), &[b])?;
    txn.commit("{}")?;
    let models = crate::report::models_or_warn(ws).map(|mut m| {
        m.uplift = report(&rows);
        m
    });
    if let Some(m) = &models {
        crate::report::write_atomic(&ws.reports_dir().join("models.json"), m.to_json())?;
    }
    crate::report::write_report(ws, models.as_ref())?;
    Ok(rows)
}

/// Who the latest `actions` table sends its campaign to, each customer named by one of
/// their source ids (as a company's campaign tool would report them back), and when it
/// goes out: the day after its as-of date.
#[derive(Debug, Clone)]
pub struct CampaignAudience {
    pub campaign_id: String,
    /// `YYYY-MM-DDT09:00:00`.
    pub sent_at: String,
    pub members: Vec<AudienceRow>,
}

#[derive(Debug, Clone)]
pub struct AudienceRow {
    pub source: String,
    pub source_id: String,
    pub action: String,
    pub control: bool,
}

/// The latest campaign's audience; `None` when the last run chose nobody.
pub fn latest_audience(ws: &Workspace) -> Result<Option<CampaignAudience>> {
    let tables = ws.tables()?;
    if !tables.contains_key(Table::Actions.name()) || !tables.contains_key(Table::CustomerSources.name()) {
        return Err(crate::EngineError::usage("no actions yet: run `rapport run` first"));
    }
    let rows = text_rows(
        ws,
        r#"WITH src AS (
             SELECT customer_id, first_value(source ORDER BY source, source_customer_id) AS source,
                    first_value(source_customer_id ORDER BY source, source_customer_id) AS sid
             FROM customer_sources GROUP BY customer_id)
           SELECT a.campaign_id, s.source, s.sid, a.action, a."group"
           FROM actions a JOIN src s ON a.customer_id = s.customer_id
           ORDER BY a.customer_id, a.action"#,
        &Personal::Stored,
    )?;
    let Some(campaign_id) = rows.first().and_then(|r| r[0].clone()) else {
        return Ok(None);
    };
    let members = rows
        .iter()
        .filter_map(|r| {
            Some(AudienceRow {
                source: r[1].clone()?,
                source_id: r[2].clone()?,
                action: r[3].clone()?,
                control: r[4].as_deref()? == "control",
            })
        })
        .collect();
    // "<prefix>-YYYY-MM-DD": sent the next morning.
    let as_of = campaign_id.get(campaign_id.len().saturating_sub(10)..).unwrap_or("");
    let sent_at = chrono::NaiveDate::parse_from_str(as_of, "%Y-%m-%d")
        .map(|d| (d + chrono::Duration::days(1)).format("%Y-%m-%dT09:00:00").to_string())
        .map_err(|_| crate::EngineError::usage(format!("campaign id {campaign_id} does not end in a date")))?;
    Ok(Some(CampaignAudience {
        campaign_id,
        sent_at,
        members,
    }))
}
