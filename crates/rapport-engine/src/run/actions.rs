//! Next-best actions: the `[actions]` policy of rapport.toml applied to every customer.
//!
//! The policy is an ordered list of rules; a rule names an action, the channels it may
//! use (in order of preference) and conditions over what `rapport run` knows of a
//! customer — RFM segment, churn probability, CLV and its rank, gaps, recency, the top
//! recommendation, an upcoming birthday. Rules are applied in order (their order is the
//! action's priority), each to the customers still under the per-customer cap, best CLV
//! first where a rule caps its audience.
//!
//! Consent is enforced, not advised: a marketing action needs the customer's latest
//! `marketing` consent to be a grant (no row, no action), and a channel whose purpose the
//! consents table records (email, sms, …) needs a grant for that purpose too; a refusal
//! recorded after the as-of date still counts. Customers contacted within
//! `cooldown_days` (campaign_outcomes.sent_at) get nothing. Each action's audience keeps
//! a control group drawn by a stable hash of (seed, action, customer), so the split does
//! not depend on who else is in the audience or on row order → the `actions` table.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use datafusion::arrow::record_batch::RecordBatch;
use serde::Deserialize;

use rapport_model::gap::Direction;
use rapport_model::uplift::in_control;

use super::gaps::{GapRow, GapType};
use super::ModelInputs;
use crate::columns::Columns;
use crate::results::{ActionsReport, RuleReport};
use crate::session::{binary_column, text_column, Session};
use crate::{EngineError, Result};
use rapport_store::schema::Table;

/// The `[actions]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActionsConfig {
    /// Share of each action's audience held back as a control group.
    pub control_share: f64,
    /// Seed of the control split.
    pub seed: u64,
    /// Most actions one customer gets from one run.
    pub max_actions_per_customer: usize,
    /// Customers contacted (campaign_outcomes.sent_at) this many days before the as-of
    /// date or later get no action.
    pub cooldown_days: u32,
    /// The campaign id is `<campaign_prefix>-<as-of date>`.
    pub campaign_prefix: String,
    /// The policy, in priority order; empty means the defaults.
    pub rules: Vec<Rule>,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        Self {
            control_share: 0.1,
            seed: 42,
            max_actions_per_customer: 1,
            cooldown_days: 30,
            campaign_prefix: "rapport".into(),
            rules: Vec::new(),
        }
    }
}

fn gap_type<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<GapType>, D::Error> {
    let s = String::deserialize(d)?;
    GapType::parse(&s).map(Some).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "gap_type = \"{s}\"; expected frequency, category, satisfaction, knowledge or profile"
        ))
    })
}

fn gap_direction<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<Direction>, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_str() {
        "over" => Ok(Some(Direction::Over)),
        "under" => Ok(Some(Direction::Under)),
        _ => Err(serde::de::Error::custom(format!("gap_direction = \"{s}\"; expected over or under"))),
    }
}

/// One rule of the policy. Every condition given must hold; absent ones are not checked.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub action: String,
    /// Channels in order of preference; the first the customer allows is used. Empty:
    /// the action needs no channel consent.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Whether the action is marketing (needs `marketing` consent). Service actions
    /// such as a care call set this to false.
    #[serde(default = "yes")]
    pub marketing: bool,
    /// RFM segment names, any of which qualifies.
    #[serde(default)]
    pub segments: Vec<String>,
    pub min_churn_probability: Option<f64>,
    pub max_churn_probability: Option<f64>,
    pub min_clv: Option<f64>,
    /// 0.8 = the top 20 % of customers by CLV.
    pub min_clv_quantile: Option<f64>,
    /// A gap of this type (frequency, category, satisfaction, knowledge, profile).
    #[serde(default, deserialize_with = "gap_type")]
    pub gap_type: Option<GapType>,
    /// With `gap_type`: only gaps in this direction (over, under).
    #[serde(default, deserialize_with = "gap_direction")]
    pub gap_direction: Option<Direction>,
    pub min_recency_days: Option<f64>,
    pub max_recency_days: Option<f64>,
    /// Only customers with a recommendation (the top one becomes the subject).
    #[serde(default)]
    pub needs_recommendation: bool,
    /// A birthday within this many days after the as-of date.
    pub birthday_within_days: Option<i64>,
    /// At most this many customers (highest CLV first).
    pub max_customers: Option<usize>,
}

fn yes() -> bool {
    true
}

impl Rule {
    fn new(action: &str, channels: &[&str]) -> Self {
        Rule {
            action: action.into(),
            channels: channels.iter().map(|c| c.to_string()).collect(),
            marketing: true,
            segments: Vec::new(),
            min_churn_probability: None,
            max_churn_probability: None,
            min_clv: None,
            min_clv_quantile: None,
            gap_type: None,
            gap_direction: None,
            min_recency_days: None,
            max_recency_days: None,
            needs_recommendation: false,
            birthday_within_days: None,
            max_customers: None,
        }
    }
}

/// The default policy: keep valuable customers at risk, call those who say they are
/// satisfied but behave like leaving, teach what their peers use, look after the best,
/// cross-sell to the active, greet on birthdays.
pub fn default_rules() -> Vec<Rule> {
    vec![
        Rule {
            min_churn_probability: Some(0.5),
            min_clv_quantile: Some(0.5),
            ..Rule::new("retention_offer", &["email", "sms"])
        },
        Rule {
            marketing: false,
            gap_type: Some(GapType::Satisfaction),
            gap_direction: Some(Direction::Over),
            ..Rule::new("care_call", &["phone"])
        },
        Rule {
            gap_type: Some(GapType::Knowledge),
            ..Rule::new("product_education", &["email", "sms"])
        },
        Rule {
            min_clv_quantile: Some(0.95),
            ..Rule::new("vip_care", &["phone", "email"])
        },
        Rule {
            max_recency_days: Some(90.0),
            needs_recommendation: true,
            ..Rule::new("cross_sell", &["email", "sms"])
        },
        Rule {
            birthday_within_days: Some(7),
            ..Rule::new("birthday_greeting", &["email", "sms"])
        },
    ]
}

impl ActionsConfig {
    /// The defaults with the default rules filled in.
    pub fn default_policy() -> Self {
        Self {
            rules: default_rules(),
            ..Self::default()
        }
    }

    pub fn from_table(table: Option<&toml::Table>) -> Result<Self> {
        let mut c: ActionsConfig = match table {
            Some(t) => t
                .clone()
                .try_into()
                .map_err(|e: toml::de::Error| EngineError::usage(format!("[actions]: {}", e.message())))?,
            None => Self::default(),
        };
        if !(0.0..1.0).contains(&c.control_share) {
            return Err(EngineError::usage(format!(
                "[actions]: control_share = {} must be in [0, 1)",
                c.control_share
            )));
        }
        if c.max_actions_per_customer == 0 {
            return Err(EngineError::usage("[actions]: max_actions_per_customer must be at least 1"));
        }
        for (i, r) in c.rules.iter().enumerate() {
            let at = format!("[[actions.rules]] #{} (action = \"{}\")", i + 1, r.action);
            if r.action.trim().is_empty() {
                return Err(EngineError::usage(format!("{at}: action must not be empty")));
            }
            if let Some(q) = r.min_clv_quantile {
                if !(0.0..1.0).contains(&q) {
                    return Err(EngineError::usage(format!("{at}: min_clv_quantile = {q} must be in [0, 1)")));
                }
            }
            if let (Some(d), None) = (r.gap_direction, r.gap_type) {
                return Err(EngineError::usage(format!(
                    "{at}: gap_direction = \"{}\" needs a gap_type",
                    d.name()
                )));
            }
        }
        if c.rules.is_empty() {
            c.rules = default_rules();
        }
        Ok(c)
    }
}

/// What the policy can look at, one entry per customer row.
pub struct Facts<'a> {
    pub ids: &'a [String],
    pub segment: &'a [Option<&'static str>],
    pub churn: &'a [Option<f64>],
    pub clv: &'a [Option<f64>],
    pub recency_days: &'a [Option<f64>],
    pub gaps: &'a [GapRow],
    pub top_recommendation: &'a [Option<String>],
    pub days_to_birthday: &'a [Option<i64>],
    pub consents: &'a Consents,
    /// Day of the latest contact (campaign_outcomes.sent_at) per customer.
    pub last_contact_day: &'a [Option<i64>],
    pub as_of_day: i64,
}

/// Latest consent per customer and purpose, and which purposes the data records at all.
#[derive(Debug, Default, Clone)]
pub struct Consents {
    pub granted: Vec<BTreeMap<String, bool>>,
    pub recorded: BTreeSet<String>,
}

impl Consents {
    fn marketing(&self, i: usize) -> bool {
        self.granted.get(i).and_then(|m| m.get("marketing")).copied() == Some(true)
    }

    /// A channel is allowed unless its purpose is recorded in the data and this
    /// customer's latest word on it is not a grant.
    fn channel(&self, i: usize, channel: &str) -> bool {
        !self.recorded.contains(channel) || self.granted.get(i).and_then(|m| m.get(channel)).copied() == Some(true)
    }
}

/// One row of the `actions` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionRow {
    pub customer: usize,
    pub action: String,
    pub priority: usize,
    pub reason: String,
    pub control: bool,
    pub channel: Option<String>,
    pub marketing: bool,
    pub subject: Option<String>,
}

pub struct Decided {
    pub rows: Vec<ActionRow>,
    pub campaign_id: String,
    pub report: ActionsReport,
}

fn fmt_money(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// Applies the policy.
/// The actions stage: the facts every rule reads — segment, churn, CLV, recency, gaps,
/// top recommendation, birthday, consents and last contact — and the decided campaign.
pub fn plan(
    session: &Session<'_>,
    policy: &ActionsConfig,
    inputs: &ModelInputs,
    customer: &CustomerScores<'_>,
    gaps: &[GapRow],
    top_recommendation: Option<&[Option<String>]>,
) -> Result<Decided> {
    let (f, day) = (&inputs.features, inputs.as_of_day);
    let n = f.len();
    let recency: Vec<Option<f64>> = (0..n).map(|i| f.last_day[i].map(|d| (day - d) as f64)).collect();
    let no_recommendations = vec![None; n];
    let facts = Facts {
        ids: &f.customer_id,
        segment: customer.segment,
        churn: customer.churn,
        clv: customer.clv,
        recency_days: &recency,
        gaps,
        top_recommendation: top_recommendation.unwrap_or(&no_recommendations),
        days_to_birthday: &birthdays(session, &f.customer_id, day)?,
        consents: &consents(session, &f.customer_id)?,
        last_contact_day: &last_contacts(session, &f.customer_id, day)?,
        as_of_day: day,
    };
    Ok(decide(policy, &facts, &crate::days::day_text(day)))
}

/// What the models say of each customer that the rules read.
pub struct CustomerScores<'a> {
    pub segment: &'a [Option<&'static str>],
    pub churn: &'a [Option<f64>],
    pub clv: &'a [Option<f64>],
}

impl Decided {
    /// Each customer's first action of the treatment group (control customers get none).
    pub fn next_actions(&self, n: usize) -> Vec<Option<String>> {
        let mut out: Vec<Option<String>> = vec![None; n];
        for a in self.rows.iter().filter(|a| !a.control) {
            out[a.customer].get_or_insert_with(|| a.action.clone());
        }
        out
    }
}

pub fn decide(cfg: &ActionsConfig, f: &Facts<'_>, as_of_text: &str) -> Decided {
    let n = f.ids.len();
    let campaign_id = format!("{}-{as_of_text}", cfg.campaign_prefix);
    let clv_quantile = clv_quantiles(f.clv);
    let mut gaps_of: Vec<Vec<&GapRow>> = vec![Vec::new(); n];
    for g in f.gaps {
        if g.customer < n {
            gaps_of[g.customer].push(g);
        }
    }
    let cooled: Vec<bool> = (0..n)
        .map(|i| f.last_contact_day[i].is_some_and(|d| d > f.as_of_day - i64::from(cfg.cooldown_days)))
        .collect();
    let mut taken: Vec<usize> = vec![0; n];
    let mut rows = Vec::new();
    let mut rule_reports = Vec::new();
    for (r_idx, rule) in cfg.rules.iter().enumerate() {
        let open = |i: usize| !cooled[i] && taken[i] < cfg.max_actions_per_customer;
        let (mut candidates, mut tally) = candidates(rule, f, open, &clv_quantile, &gaps_of);
        tally.capped = cap(rule, f, &mut candidates);
        for c in candidates {
            taken[c.i] += 1;
            let is_control = in_control(cfg.seed, &rule.action, &f.ids[c.i], cfg.control_share);
            if is_control {
                tally.control += 1;
            } else {
                tally.treatment += 1;
            }
            rows.push(ActionRow {
                customer: c.i,
                action: rule.action.clone(),
                priority: r_idx + 1,
                reason: c.reason,
                control: is_control,
                channel: c.channel,
                marketing: rule.marketing,
                subject: c.subject,
            });
        }
        rule_reports.push(tally.report(rule, r_idx + 1));
    }
    rows.sort_by(|a, b| f.ids[a.customer].cmp(&f.ids[b.customer]).then(a.priority.cmp(&b.priority)));
    let without_marketing = (0..n).filter(|&i| !f.consents.marketing(i)).count();
    let report = ActionsReport {
        campaign_id: campaign_id.clone(),
        control_share: cfg.control_share,
        seed: cfg.seed,
        max_actions_per_customer: cfg.max_actions_per_customer,
        cooldown_days: cfg.cooldown_days,
        customers_in_cooldown: cooled.iter().filter(|c| **c).count(),
        customers_without_marketing_consent: without_marketing,
        consent_purposes_recorded: f.consents.recorded.iter().cloned().collect(),
        rows: rows.len(),
        rules: rule_reports,
    };
    Decided { rows, campaign_id, report }
}

/// Per customer, the share of customers with a CLV below theirs (ties share the
/// quantile of their first member); `None` without a CLV.
fn clv_quantiles(clv: &[Option<f64>]) -> Vec<Option<f64>> {
    let mut q = vec![None; clv.len()];
    let mut with: Vec<(f64, usize)> = clv.iter().enumerate().filter_map(|(i, c)| c.map(|c| (c, i))).collect();
    with.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let m = with.len() as f64;
    let mut k = 0;
    while k < with.len() {
        let mut j = k;
        while j < with.len() && with[j].0 == with[k].0 {
            j += 1;
        }
        for &(_, i) in &with[k..j] {
            q[i] = Some(k as f64 / m);
        }
        k = j;
    }
    q
}

/// A customer a rule applies to and may reach: why, on which channel, about what.
struct Candidate {
    i: usize,
    reason: String,
    channel: Option<String>,
    subject: Option<String>,
}

/// What became of the customers a rule matched.
#[derive(Default)]
struct Tally {
    matched: usize,
    no_consent: usize,
    no_channel: usize,
    capped: usize,
    treatment: usize,
    control: usize,
}

impl Tally {
    fn report(self, rule: &Rule, priority: usize) -> RuleReport {
        RuleReport {
            action: rule.action.clone(),
            priority,
            marketing: rule.marketing,
            matched: self.matched,
            blocked_no_marketing_consent: self.no_consent,
            blocked_no_channel_consent: self.no_channel,
            capped: self.capped,
            treatment: self.treatment,
            control: self.control,
        }
    }
}

/// The customers `rule` applies to among those still `open` (not in cooldown, under
/// their cap of actions), with marketing consent when the action is marketing and the
/// first channel of the rule they agreed to; and the tally of those left out.
fn candidates(
    rule: &Rule,
    f: &Facts<'_>,
    open: impl Fn(usize) -> bool,
    clv_quantile: &[Option<f64>],
    gaps_of: &[Vec<&GapRow>],
) -> (Vec<Candidate>, Tally) {
    let mut tally = Tally::default();
    let mut out = Vec::new();
    for i in (0..f.ids.len()).filter(|&i| open(i)) {
        let Some((reason, subject)) = matches(rule, f, i, clv_quantile[i], &gaps_of[i]) else {
            continue;
        };
        tally.matched += 1;
        if rule.marketing && !f.consents.marketing(i) {
            tally.no_consent += 1;
            continue;
        }
        let channel = if rule.channels.is_empty() {
            None
        } else {
            match rule.channels.iter().find(|c| f.consents.channel(i, c)) {
                Some(c) => Some(c.clone()),
                None => {
                    tally.no_channel += 1;
                    continue;
                }
            }
        };
        out.push(Candidate {
            i,
            reason,
            channel,
            subject,
        });
    }
    (out, tally)
}

/// Keeps the `max_customers` of the rule with the highest CLV (ties by id), in customer
/// order; returns how many were left out.
fn cap(rule: &Rule, f: &Facts<'_>, candidates: &mut Vec<Candidate>) -> usize {
    let Some(cap) = rule.max_customers.filter(|&cap| candidates.len() > cap) else {
        return 0;
    };
    candidates.sort_by(|a, b| {
        let (ca, cb) = (f.clv[a.i].unwrap_or(f64::NEG_INFINITY), f.clv[b.i].unwrap_or(f64::NEG_INFINITY));
        cb.total_cmp(&ca).then(f.ids[a.i].cmp(&f.ids[b.i]))
    });
    let capped = candidates.len() - cap;
    candidates.truncate(cap);
    candidates.sort_by_key(|c| c.i);
    capped
}

/// Whether `rule` applies to customer `i`; if so, why (in words) and its subject.
fn matches(rule: &Rule, f: &Facts<'_>, i: usize, clv_q: Option<f64>, gaps: &[&GapRow]) -> Option<(String, Option<String>)> {
    let mut why: Vec<String> = Vec::new();
    why.extend(segment_clause(rule, f, i)?);
    why.extend(churn_clause(rule, f, i)?);
    why.extend(clv_clause(rule, f, i, clv_q)?);
    let mut subject = None;
    if let Some(t) = rule.gap_type {
        let g = gaps
            .iter()
            .filter(|g| g.gap_type == t && rule.gap_direction.is_none_or(|d| d == g.direction))
            .max_by(|a, b| a.evidence.total_cmp(&b.evidence).then(b.subject.cmp(&a.subject)))?;
        why.push(format!(
            "{t} gap on {}: says {}, does {} (evidence {:.2})",
            g.subject, g.reported_text, g.observed_text, g.evidence
        ));
        subject = Some(g.subject.clone());
    }
    why.extend(recency_clause(rule, f, i)?);
    if rule.needs_recommendation {
        let p = f.top_recommendation[i].as_ref()?;
        why.push(format!("recommended product {p}"));
        subject.get_or_insert_with(|| p.clone());
    }
    why.extend(birthday_clause(rule, f, i)?);
    if why.is_empty() {
        why.push("applies to every customer".into());
    }
    Some((why.join("; "), subject))
}

// Each clause of a rule, for customer `i`: `None` when the customer fails it,
// `Some(None)` when the rule does not set it, `Some(Some(why))` when it holds.

fn segment_clause(rule: &Rule, f: &Facts<'_>, i: usize) -> Option<Option<String>> {
    if rule.segments.is_empty() {
        return Some(None);
    }
    let s = f.segment[i]?;
    rule.segments.iter().any(|x| x == s).then(|| Some(format!("RFM segment {s}")))
}

fn churn_clause(rule: &Rule, f: &Facts<'_>, i: usize) -> Option<Option<String>> {
    if rule.min_churn_probability.is_none() && rule.max_churn_probability.is_none() {
        return Some(None);
    }
    let p = f.churn[i]?;
    let outside = rule.min_churn_probability.is_some_and(|m| p < m) || rule.max_churn_probability.is_some_and(|m| p > m);
    (!outside).then(|| Some(format!("churn probability {p:.2}")))
}

fn clv_clause(rule: &Rule, f: &Facts<'_>, i: usize, clv_q: Option<f64>) -> Option<Option<String>> {
    if rule.min_clv.is_none() && rule.min_clv_quantile.is_none() {
        return Some(None);
    }
    let c = f.clv[i]?;
    if rule.min_clv.is_some_and(|m| c < m) {
        return None;
    }
    let Some(m) = rule.min_clv_quantile else {
        return Some(Some(format!("CLV {}", fmt_money(c))));
    };
    let q = clv_q?;
    (q >= m).then(|| Some(format!("CLV {} (top {:.0} %)", fmt_money(c), ((1.0 - q) * 100.0).max(1.0))))
}

fn recency_clause(rule: &Rule, f: &Facts<'_>, i: usize) -> Option<Option<String>> {
    if rule.min_recency_days.is_none() && rule.max_recency_days.is_none() {
        return Some(None);
    }
    let r = f.recency_days[i]?;
    let outside = rule.min_recency_days.is_some_and(|m| r < m) || rule.max_recency_days.is_some_and(|m| r > m);
    (!outside).then(|| Some(format!("last order {r:.0} days ago")))
}

fn birthday_clause(rule: &Rule, f: &Facts<'_>, i: usize) -> Option<Option<String>> {
    let Some(w) = rule.birthday_within_days else {
        return Some(None);
    };
    let d = f.days_to_birthday[i]?;
    (d <= w).then(|| {
        Some(if d == 0 {
            "birthday today".into()
        } else {
            format!("birthday in {d} days")
        })
    })
}

/// Days from `as_of` (a day number since 1970-01-01) to the next birthday of someone
/// born on `birth` (YYYY-MM-DD); 29 February counts as 28 February in other years.
pub fn days_to_birthday(birth: &str, as_of_day: i64) -> Option<i64> {
    use chrono::{Datelike, NaiveDate};
    let b = NaiveDate::parse_from_str(birth.get(..10)?, "%Y-%m-%d").ok()?;
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1)?;
    let today = epoch.checked_add_signed(chrono::Duration::days(as_of_day))?;
    let on = |year: i32| NaiveDate::from_ymd_opt(year, b.month(), b.day()).or_else(|| NaiveDate::from_ymd_opt(year, 2, 28));
    let this = on(today.year())?;
    let next = if this >= today { this } else { on(today.year() + 1)? };
    Some((next - today).num_days())
}

/// Each customer's latest word per purpose (lower-cased, trimmed): customer_id, purpose,
/// granted; on the same instant a refusal wins.
const LATEST_CONSENTS: &str = "SELECT customer_id, purpose, granted FROM (
   SELECT customer_id, lower(trim(purpose)) AS purpose, granted,
          row_number() OVER (PARTITION BY customer_id, lower(trim(purpose))
                             ORDER BY recorded_at DESC, granted ASC) AS rn
   FROM consents) WHERE rn = 1";

/// Reads the latest consent per customer and purpose (all of them, also those recorded
/// after the as-of date: a withdrawal is honoured as soon as it is known).
pub fn consents(session: &Session<'_>, ids: &[String]) -> Result<Consents> {
    let mut out = Consents {
        granted: vec![BTreeMap::new(); ids.len()],
        recorded: BTreeSet::new(),
    };
    if !session.workspace().has(Table::Consents)? {
        return Ok(out);
    }
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let rows = session.text_rows(LATEST_CONSENTS, &crate::session::Personal::Stored)?;
    for r in rows {
        let (Some(c), Some(p), Some(g)) = (&r[0], &r[1], &r[2]) else {
            continue;
        };
        out.recorded.insert(p.clone());
        if let Some(&i) = index.get(c.as_str()) {
            out.granted[i].insert(p.clone(), g == "true");
        }
    }
    Ok(out)
}

/// The rows of the `actions` table whose customers may still get them: a marketing action
/// needs the customer's latest `marketing` consent to be a grant, a channel whose purpose
/// the consents table records needs a grant for it too (as when the run decided; consents
/// recorded since count), and a customer contacted since the run (a treatment row of
/// campaign_outcomes sent after the end of its as-of day, `decided_before` in
/// microseconds) is in cooldown until the next run. Reads the tables `actions`, and
/// `consents` and `campaign_outcomes` when `has_consents` and `has_outcomes`; `condition`
/// (over `a`, the actions row) narrows the rows further. The columns are the table's.
pub fn still_allowed_sql(has_consents: bool, has_outcomes: bool, decided_before: i64, condition: Option<&str>) -> String {
    let mut with = Vec::new();
    let mut joins = Vec::new();
    let mut wheres: Vec<String> = condition.map(|c| vec![c.to_string()]).unwrap_or_default();
    if has_consents {
        with.push(format!(
            "latest AS ({LATEST_CONSENTS}), recorded AS (SELECT DISTINCT lower(trim(purpose)) AS purpose FROM consents)"
        ));
        joins.push(
            "LEFT JOIN latest m ON m.customer_id = a.customer_id AND m.purpose = 'marketing'
             LEFT JOIN latest ch ON ch.customer_id = a.customer_id AND ch.purpose = lower(trim(a.channel))
             LEFT JOIN recorded r ON r.purpose = lower(trim(a.channel))"
                .to_string(),
        );
        wheres.push("(NOT a.marketing OR coalesce(m.granted, false))".into());
        wheres.push("(a.channel IS NULL OR r.purpose IS NULL OR coalesce(ch.granted, false))".into());
    } else {
        // No consents at all: no marketing (no grant), service actions only.
        wheres.push("NOT a.marketing".into());
    }
    if has_outcomes {
        with.push(format!(
            "contacted AS (SELECT DISTINCT customer_id FROM campaign_outcomes
                           WHERE \"group\" <> 'control' AND sent_at >= to_timestamp_micros({decided_before}))"
        ));
        joins.push("LEFT JOIN contacted k ON k.customer_id = a.customer_id".into());
        wheres.push("k.customer_id IS NULL".into());
    }
    let with = if with.is_empty() {
        String::new()
    } else {
        format!("WITH {} ", with.join(", "))
    };
    let wheres = if wheres.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", wheres.join(" AND "))
    };
    format!("{with}SELECT a.* FROM actions a {} {wheres}", joins.join(" "))
}

/// [`still_allowed_sql`] over the tables `ws` has, for the actions of its last run, as of
/// `decided_on` (that run's as-of day; None: contacts are not checked); None without an
/// actions table.
pub fn still_allowed_in(ws: &rapport_store::Workspace, decided_on: Option<i64>, condition: Option<&str>) -> Result<Option<String>> {
    if !ws.has(Table::Actions)? {
        return Ok(None);
    }
    let outcomes = decided_on.is_some() && ws.has(Table::CampaignOutcomes)?;
    Ok(Some(still_allowed_sql(
        ws.has(Table::Consents)?,
        outcomes,
        decided_on.map_or(0, |d| (d + 1) * super::MICROS_PER_DAY),
        condition,
    )))
}

/// Day of each customer's latest contact in campaign_outcomes up to the as-of date (a
/// control row is not a contact).
pub fn last_contacts(session: &Session<'_>, ids: &[String], as_of_day: i64) -> Result<Vec<Option<i64>>> {
    let mut out = vec![None; ids.len()];
    if !session.workspace().has(Table::CampaignOutcomes)? {
        return Ok(out);
    }
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let end = (as_of_day + 1) * super::MICROS_PER_DAY;
    let rows = session.text_rows(
        &format!(
            "SELECT customer_id, max(CAST(sent_at AS BIGINT)) FROM campaign_outcomes
             WHERE sent_at < to_timestamp_micros({end}) AND \"group\" <> 'control' GROUP BY customer_id"
        ),
        &crate::session::Personal::Stored,
    )?;
    for r in rows {
        let (Some(c), Some(t)) = (&r[0], &r[1]) else { continue };
        if let (Some(&i), Ok(t)) = (index.get(c.as_str()), t.parse::<i64>()) {
            out[i] = Some(t.div_euclid(super::MICROS_PER_DAY));
        }
    }
    Ok(out)
}

/// Days to each customer's next birthday, from the birth dates in their profiles
/// (decrypted in memory only; nothing personal is written). Without a key: none.
pub fn birthdays(session: &Session<'_>, ids: &[String], as_of_day: i64) -> Result<Vec<Option<i64>>> {
    let mut out = vec![None; ids.len()];
    if !session.workspace().has(Table::CustomerProfiles)? {
        return Ok(out);
    }
    let Ok(keys) = session.workspace().keys(false) else {
        return Ok(out);
    };
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    // The stored ciphertexts, opened here one by one (the earliest date of a customer's
    // sources counts), so the run needs no second view of the tables.
    let batches = session.query(
        "SELECT customer_id, birth_date FROM customer_profiles WHERE birth_date IS NOT NULL",
        &crate::session::Personal::Stored,
    )?;
    let mut earliest: Vec<Option<String>> = vec![None; ids.len()];
    for b in &batches {
        let (c, d) = (text_column(b, 0)?, binary_column(b, 1)?);
        for r in 0..b.num_rows() {
            let Some(&i) = index.get(c.value(r)) else { continue };
            let Ok(date) = keys.decrypt("birth_date", d.value(r)) else {
                continue;
            };
            if earliest[i].as_ref().is_none_or(|e| date < *e) {
                earliest[i] = Some(date);
            }
        }
    }
    for (o, e) in out.iter_mut().zip(&earliest) {
        *o = e.as_deref().and_then(|b| days_to_birthday(b, as_of_day));
    }
    Ok(out)
}

pub fn batch(ids: &[String], d: &Decided) -> Result<RecordBatch> {
    let rows = &d.rows;
    let mut c = Columns::default();
    c.text("customer_id", false, rows.iter().map(|r| Some(ids[r.customer].as_str())));
    c.text("action", false, rows.iter().map(|r| Some(r.action.as_str())));
    c.ints("priority", false, rows.iter().map(|r| Some(r.priority as i64)));
    c.text("reason", false, rows.iter().map(|r| Some(r.reason.as_str())));
    c.text(
        "group",
        false,
        rows.iter().map(|r| Some(if r.control { "control" } else { "treatment" })),
    );
    c.text("campaign_id", false, rows.iter().map(|_| Some(d.campaign_id.as_str())));
    c.text("channel", true, rows.iter().map(|r| r.channel.as_deref()));
    c.bools("marketing", false, rows.iter().map(|r| Some(r.marketing)));
    c.text("subject", true, rows.iter().map(|r| r.subject.as_deref()));
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn birthdays() {
        let day = |s: &str| {
            (chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap() - chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days()
        };
        assert_eq!(days_to_birthday("1980-06-10", day("2024-06-10")), Some(0));
        assert_eq!(days_to_birthday("1980-06-13", day("2024-06-10")), Some(3));
        assert_eq!(days_to_birthday("1980-06-09", day("2024-06-10")), Some(364));
        assert_eq!(days_to_birthday("1980-02-29", day("2023-02-27")), Some(1));
        assert_eq!(days_to_birthday("1980-01-02", day("2023-12-31")), Some(2));
        assert_eq!(days_to_birthday("garbage", 0), None);
    }

    #[test]
    fn clv_quantiles_share_ties_and_skip_customers_without_clv() {
        let q = clv_quantiles(&[Some(30.0), None, Some(10.0), Some(30.0), Some(20.0)]);
        assert_eq!(q, [Some(0.5), None, Some(0.0), Some(0.5), Some(0.25)]);
        assert!(clv_quantiles(&[None, None]).iter().all(Option::is_none));
    }

    type Fixture = (Vec<String>, Vec<Option<f64>>, Vec<Option<f64>>, Consents);

    fn facts_fixture() -> Fixture {
        let ids: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
        let churn = vec![Some(0.9), Some(0.8), Some(0.1), Some(0.7), None, Some(0.95)];
        let clv = vec![Some(500.0), Some(900.0), Some(50.0), Some(20.0), None, Some(700.0)];
        let mut granted = vec![BTreeMap::new(); 6];
        for (i, g) in granted.iter_mut().enumerate() {
            g.insert("marketing".to_string(), i != 1);
            g.insert("email".to_string(), i != 5);
        }
        let consents = Consents {
            granted,
            recorded: ["marketing", "email"].iter().map(|s| s.to_string()).collect(),
        };
        (ids, churn, clv, consents)
    }

    #[test]
    fn consent_caps_and_control() {
        let (ids, churn, clv, consents) = facts_fixture();
        let none_f = vec![None; 6];
        let none_i = vec![None; 6];
        let none_s = vec![None; 6];
        let seg = vec![None; 6];
        let mut last_contact = vec![None; 6];
        last_contact[3] = Some(995); // contacted 5 days before the as-of day
        let f = Facts {
            ids: &ids,
            segment: &seg,
            churn: &churn,
            clv: &clv,
            recency_days: &none_f,
            gaps: &[],
            top_recommendation: &none_s,
            days_to_birthday: &none_i,
            consents: &consents,
            last_contact_day: &last_contact,
            as_of_day: 1000,
        };
        let cfg = ActionsConfig {
            control_share: 0.0,
            rules: vec![Rule {
                min_churn_probability: Some(0.5),
                ..Rule::new("retention_offer", &["email", "sms"])
            }],
            ..ActionsConfig::default()
        };
        let d = decide(&cfg, &f, "2024-01-01");
        // c1 refused marketing, c3 is cooling down, c2 is not at risk, c4 has no score;
        // c5 refused email but sms is not a recorded purpose, so sms is used.
        let got: Vec<(&str, Option<&str>)> = d.rows.iter().map(|r| (ids[r.customer].as_str(), r.channel.as_deref())).collect();
        assert_eq!(got, vec![("c0", Some("email")), ("c5", Some("sms"))]);
        assert_eq!(d.campaign_id, "rapport-2024-01-01");
        assert!(d.rows[0].reason.contains("churn probability 0.90"), "{}", d.rows[0].reason);
        // A cap keeps the most valuable.
        let capped = ActionsConfig {
            rules: vec![Rule {
                max_customers: Some(1),
                ..cfg.rules[0].clone()
            }],
            ..cfg.clone()
        };
        let d = decide(&capped, &f, "2024-01-01");
        assert_eq!(d.rows.len(), 1);
        assert_eq!(ids[d.rows[0].customer], "c5");
        // Everyone in control at share → 1 is refused by the config, 0.999 puts nearly all.
        let all_control = ActionsConfig {
            control_share: 0.999_999,
            ..cfg.clone()
        };
        assert!(decide(&all_control, &f, "x").rows.iter().all(|r| r.control));
        assert!(ActionsConfig::from_table(Some(&toml::from_str("control_share = 1.0").unwrap())).is_err());
    }

    #[test]
    fn config_defaults_and_errors() {
        let c = ActionsConfig::from_table(None).unwrap();
        assert_eq!(c.rules, default_rules());
        let t: toml::Table = toml::from_str("[[rules]]\naction = \"x\"\ngap_type = \"mood\"").unwrap();
        let e = ActionsConfig::from_table(Some(&t)).unwrap_err().to_string();
        assert!(e.contains("gap_type = \"mood\""), "{e}");
        let t: toml::Table = toml::from_str("[[rules]]\naction = \"x\"\ncolour = 1").unwrap();
        let e = ActionsConfig::from_table(Some(&t)).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        let t: toml::Table = toml::from_str("[[rules]]\naction = \"winback\"\nsegments = [\"Lost\"]").unwrap();
        let c = ActionsConfig::from_table(Some(&t)).unwrap();
        assert_eq!(c.rules.len(), 1);
        assert!(c.rules[0].marketing);
    }
}
