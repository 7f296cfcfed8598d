//! The information gap (issue: what customers say vs what they do, and what groups do
//! not know), from the survey answers, the fitted BG/NBD posterior, the churn model, the
//! category mix and the segments:
//!
//! - **frequency**: the stated `purchase_frequency` (a class is a range of rates) against
//!   the BG/NBD posterior of the customer's purchase rate — a mixture of
//!   Gamma(r + x, α + T) if alive and Gamma(r + x, α + t_s) if the customer left after
//!   they were last seen at t_s (the last purchase t_x, or a later event), weighted by
//!   P(alive) given purchases and activity; evidence = posterior probability that the
//!   rate is on the far side of the stated range;
//! - **category**: each stated `preferred_category` (several per customer allowed)
//!   against the customer's order lines per category. Naming a category claims it is
//!   bought at least `category_preference_ratio` of the most bought one; under a
//!   population prior of category shares (a Dirichlet mixture with a diffuse component
//!   and a favourite-category component per category, fitted by maximum likelihood,
//!   `rapport_model::gap::CategoryMixture`) the lines raise or lower the probability of
//!   that claim, and the honesty mixture turns these likelihoods into P(misreport);
//! - **satisfaction**: stated satisfaction (else NPS, else will_repurchase) against a
//!   latent-class model (`rapport_model::gap::SatisfactionModel`) fitted by EM over all
//!   buyers: each is truly satisfied or not, which shows in complaints and support
//!   tickets per order, low review ratings, returned lines and having left (1 − P(alive)
//!   as of the last sighting, sharpened by the silence of all activity since; see
//!   `left_with_activity`), and in the answer with a fitted misreport rate; evidence =
//!   posterior probability that the stated side (satisfied: `over`, dissatisfied:
//!   `under`) is wrong;
//! - **knowledge** (per segment, seed 004): awareness answers (`aware:<x>`), feature use
//!   (`feature_use` subjects) and category adoption per segment against everyone else,
//!   two-proportion tests with a Benjamini–Hochberg correction → `knowledge_gaps`, and a
//!   `knowledge` row in `gaps` for each member of a significant gap not yet aware/using;
//! - **profile**: the stated `preferred_channel` against the channel actually used most;
//!   source systems that disagree on city or birth date; no email and no phone anywhere.
//!
//! Customers with too little history (tenure below `gap_min_tenure_days`) get no
//! behaviour gap; a gap is reported only when its evidence reaches `gap_evidence`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use datafusion::arrow::array::{Array, Int64Array};
use datafusion::arrow::record_batch::RecordBatch;

use rapport_model::bgnbd::BgNbd;
use rapport_model::btyd::History;
use rapport_model::gap::{self, benjamini_hochberg, two_proportion, Direction, Honesty, RatePosterior, StatedRate};

use super::clv::Clv;
use super::segments::Segmentation;
use super::ModelInputs;
use crate::columns::Columns;
use crate::config::ModelsConfig;
use crate::results::{
    CategoryJudgement, CategoryPrior, Checked, GapCheck, GapReport, Judged, Judgement, KnowledgeSummary, SatisfactionJudgement,
};
use crate::session::{int_column, text_column, Personal, Session};
use crate::Result;
use rapport_store::schema::Table;

use crate::days::MICROS_PER_DAY;
/// The smallest shortfall (in rate points) a knowledge gap must show besides significance.
const MIN_KNOWLEDGE_GAP: f64 = 0.10;

/// The kinds of information gap (`gaps.gap_type`), in the order of their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GapType {
    Category,
    Frequency,
    Knowledge,
    Profile,
    Satisfaction,
}

impl GapType {
    pub const ALL: [GapType; 5] = [
        GapType::Category,
        GapType::Frequency,
        GapType::Knowledge,
        GapType::Profile,
        GapType::Satisfaction,
    ];

    pub fn name(self) -> &'static str {
        match self {
            GapType::Category => "category",
            GapType::Frequency => "frequency",
            GapType::Knowledge => "knowledge",
            GapType::Profile => "profile",
            GapType::Satisfaction => "satisfaction",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }
}

impl std::fmt::Display for GapType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One row of the `gaps` table.
#[derive(Debug, Clone, PartialEq)]
pub struct GapRow {
    pub customer: usize,
    pub gap_type: GapType,
    pub subject: String,
    pub reported: Option<f64>,
    pub observed: Option<f64>,
    pub reported_text: String,
    pub observed_text: String,
    pub delta: Option<f64>,
    pub evidence: f64,
    pub direction: Direction,
    pub action: String,
}

/// One row of the `knowledge_gaps` table.
#[derive(Debug, Clone, PartialEq)]
pub struct KnowledgeRow {
    pub segment_id: String,
    pub segment: String,
    pub subject: String,
    pub members: usize,
    pub segment_rate: f64,
    pub reference_rate: f64,
    pub gap: f64,
    pub p_value: f64,
    pub q_value: f64,
    pub customers_affected: usize,
    pub rank: usize,
}

/// Survey answers of one customer: the latest answer per question, and every
/// preferred category named.
#[derive(Debug, Default, Clone)]
pub struct Answers {
    pub latest: BTreeMap<String, (i64, String)>,
    pub categories: BTreeSet<String>,
}

/// Reads every answer given before the end of `as_of_day`, per customer row.
pub fn answers(session: &Session<'_>, as_of_day: i64, ids: &[String]) -> Result<Vec<Answers>> {
    let mut out = vec![Answers::default(); ids.len()];
    if !session.workspace().has(Table::Surveys)? {
        return Ok(out);
    }
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let end = (as_of_day + 1) * MICROS_PER_DAY;
    let batches = session.query(
        &format!(
            "SELECT customer_id, question, answer, CAST(answered_at AS BIGINT) AS at FROM surveys
             WHERE answered_at < to_timestamp_micros({end})"
        ),
        &Personal::Stored,
    )?;
    for b in &batches {
        let (c, q, a, t) = (text_column(b, 0)?, text_column(b, 1)?, text_column(b, 2)?, int_column(b, 3)?);
        for r in 0..b.num_rows() {
            if c.is_null(r) || q.is_null(r) || a.is_null(r) {
                continue;
            }
            let Some(&i) = index.get(c.value(r)) else { continue };
            let (question, answer, at) = (q.value(r).trim().to_string(), a.value(r).trim().to_string(), t.value(r));
            if question == "preferred_category" {
                out[i].categories.insert(answer.clone());
            }
            let e = out[i].latest.entry(question).or_insert((i64::MIN, String::new()));
            // Latest wins; the same time keeps the larger text, so the choice is stable.
            if (at, &answer) > (e.0, &e.1) {
                *e = (at, answer);
            }
        }
    }
    Ok(out)
}

/// What the company's own records say against each other: a customer whose source
/// systems disagree on city or birth date (birth dates are compared as stored
/// ciphertexts, which are equal exactly when the dates are), or who has no email and no
/// phone in any source. Returns (customer row, subject, what is held, action).
pub fn profile_issues(session: &Session<'_>, ids: &[String]) -> Result<Vec<(usize, String, String, String)>> {
    if !session.workspace().has(Table::CustomerProfiles)? {
        return Ok(Vec::new());
    }
    let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, s)| (s.as_str(), i)).collect();
    let batches = session.query(
        "SELECT customer_id,
                count(DISTINCT city) AS cities, string_agg(DISTINCT city || ' (' || source || ')', ', ' ORDER BY city || ' (' || source || ')') AS city_list,
                count(DISTINCT birth_date) AS births, count(DISTINCT source) AS sources,
                count(email) + count(phone) AS contacts
         FROM customer_profiles GROUP BY customer_id",
        &Personal::Stored,
    )?;
    let mut out = Vec::new();
    for b in &batches {
        let (c, cities, list) = (text_column(b, 0)?, int_column(b, 1)?, text_column(b, 2)?);
        let (births, sources, contacts) = (int_column(b, 3)?, int_column(b, 4)?, int_column(b, 5)?);
        let int = |a: &Int64Array, r: usize| a.value(r);
        for r in 0..b.num_rows() {
            let Some(&i) = index.get(c.value(r)) else { continue };
            if int(&cities, r) > 1 {
                let held = if list.is_null(r) {
                    String::new()
                } else {
                    list.value(r).to_string()
                };
                out.push((
                    i,
                    "city".to_string(),
                    format!("sources disagree: {held}"),
                    "confirm the customer's city and correct the other systems".to_string(),
                ));
            }
            if int(&births, r) > 1 {
                out.push((
                    i,
                    "birth_date".to_string(),
                    format!("{} different birth dates across {} sources", int(&births, r), int(&sources, r)),
                    "confirm the birth date (greetings and age rules depend on it)".to_string(),
                ));
            }
            if int(&contacts, r) == 0 {
                out.push((
                    i,
                    "contact".to_string(),
                    "no email and no phone in any source".to_string(),
                    "collect a contact channel at the next interaction".to_string(),
                ));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What the gap analysis works from.
pub struct Inputs<'a> {
    /// Features, activity, buyers and their histories as of the date judged.
    pub model: &'a ModelInputs,
    pub answers: &'a [Answers],
    pub bgnbd: Option<&'a BgNbd>,
    pub p_alive: &'a [Option<f64>],
    pub churn: &'a [Option<f64>],
    /// Segments of each customer: (segment_id, name) per kind.
    pub segments: &'a [Vec<(String, String)>],
    /// The RFM segment of each customer (the category prior is pooled within it).
    pub rfm: &'a [Option<&'static str>],
    pub main_channel: &'a [Option<String>],
    /// Conflicting or missing profile attributes (see [`profile_issues`]).
    pub profile_issues: &'a [(usize, String, String, String)],
    pub cfg: &'a ModelsConfig,
}

pub struct Outputs {
    pub gaps: Vec<GapRow>,
    /// Every frequency, category and satisfaction statement judged, with its evidence
    /// whatever its size (for the held-out check of the evidence).
    pub assessed: Vec<GapRow>,
    pub knowledge: Vec<KnowledgeRow>,
    /// Per customer, the purchase probability their stated frequency implies for the
    /// next churn window (the `reported_p` of the behaviour class `purchase`).
    pub reported_purchase: Vec<Option<f64>>,
    pub report: GapReport,
}

/// The gaps stage: the survey answers and the profiles' conflicts against the models,
/// and the held-out check of the evidence when `gap_check_days` > 0.
pub fn judge(
    session: &Session<'_>,
    inputs: &ModelInputs,
    clv: &Clv,
    seg: &Segmentation,
    churn: &[Option<f64>],
    cfg: &ModelsConfig,
) -> Result<Outputs> {
    let f = &inputs.features;
    let answers = answers(session, inputs.as_of_day, &f.customer_id)?;
    let profile_issues = profile_issues(session, &f.customer_id)?;
    let rfm = seg.rfm_names();
    let mut out = analyse(&Inputs {
        model: inputs,
        answers: &answers,
        bgnbd: clv.bgnbd.as_ref().map(|b| &b.params),
        p_alive: &clv.p_alive,
        churn,
        segments: &seg.members,
        rfm: &rfm,
        main_channel: &seg.channels,
        profile_issues: &profile_issues,
        cfg,
    });
    if cfg.gap_check_days > 0 {
        out.report.reliability = Some(held_out_check(session, inputs, &out.assessed, cfg));
    }
    Ok(out)
}

/// The held-out check of the evidence (`rapport evaluate gaps`): every statement judged
/// as of `gap_check_days` earlier against the same statements judged now.
fn held_out_check(session: &Session<'_>, inputs: &ModelInputs, assessed: &[GapRow], cfg: &ModelsConfig) -> GapCheck {
    let cutoff = inputs.as_of_day - i64::from(cfg.gap_check_days);
    let gaps = match super::assess_gaps(session, cfg, Some(&crate::days::day_text(cutoff))) {
        Ok((ids_then, then, _)) => Checked::ByType(super::reliability::gap_reliability(
            (&ids_then, &then),
            (&inputs.features.customer_id, assessed),
            cfg.gap_evidence,
        )),
        Err(e) => Checked::NotChecked {
            message: format!("not checked: {e}"),
        },
    };
    GapCheck {
        calibration_end: crate::days::day_text(cutoff),
        days: cfg.gap_check_days,
        gaps,
    }
}

fn yes_no(a: &str) -> Option<bool> {
    match a.trim().to_ascii_lowercase().as_str() {
        "yes" | "y" | "true" | "1" => Some(true),
        "no" | "n" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// "1 order", "3 orders".
fn counted(n: f64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1.0 { "" } else { "s" })
}

fn round(v: f64, d: i32) -> f64 {
    let s = 10f64.powi(d);
    (v * s).round() / s
}

pub fn analyse(inp: &Inputs<'_>) -> Outputs {
    let cfg = inp.cfg;
    let judge = Judge::new(inp);
    let mut found = Findings::default();
    // Every behaviour statement judged (frequency, category, satisfaction), whatever its
    // evidence; those reaching `gap_evidence` are the reported gaps.
    let surveyed = inp.answers.iter().filter(|a| !a.latest.is_empty()).count();
    if surveyed == 0 {
        found.skipped.insert(
            "frequency, category, satisfaction".into(),
            "need a surveys table with purchase_frequency, preferred_category and satisfaction / nps / will_repurchase answers".into(),
        );
    }
    let reported_purchase = judge.frequency(&mut found);
    judge.category(&mut found, surveyed);
    judge.satisfaction(&mut found, surveyed);
    let (knowledge, knowledge_report) = knowledge_gaps(inp, &mut found.gaps);
    if knowledge_report.is_empty() {
        found.skipped.insert(
            "knowledge".into(),
            "needs aware:<subject> survey answers, feature_use events with a subject, or product categories".into(),
        );
    }
    let profile = judge.profile(&mut found);
    let Findings {
        mut gaps,
        assessed,
        judged,
        not_judged,
        skipped,
    } = found;
    gaps.extend(assessed.iter().filter(|g| g.evidence >= cfg.gap_evidence).cloned());
    gaps.sort_by(|a, b| (a.customer, a.gap_type, &a.subject).cmp(&(b.customer, b.gap_type, &b.subject)));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for g in &gaps {
        *counts.entry(format!("{}:{}", g.gap_type, g.direction.name())).or_default() += 1;
    }
    let not_judged = not_judged
        .into_iter()
        .map(|(t, why)| (t.to_string(), why.into_iter().map(|(w, k)| (w.to_string(), k)).collect()))
        .collect();
    let report = GapReport {
        surveyed_customers: surveyed,
        evidence_threshold: cfg.gap_evidence,
        min_tenure_days: cfg.gap_min_tenure_days,
        gaps: counts,
        judged,
        not_judged,
        profile_gaps: profile,
        knowledge_gaps: knowledge_report,
        not_computed: skipped,
        reliability: None,
    };
    Outputs {
        gaps,
        assessed,
        knowledge,
        reported_purchase,
        report,
    }
}

/// What judging every gap type shares: the inputs, whose statements may be judged, and
/// the probability that a customer has left.
struct Judge<'i, 'a> {
    inp: &'i Inputs<'a>,
    /// Buyer row → index of their history.
    history_of: HashMap<usize, usize>,
    /// Where the events table says anything.
    events: Option<Events<'a>>,
}

/// Events per customer, days since the first and the last event, and the population
/// prior of event rates (gamma shape and rate).
#[derive(Clone, Copy)]
struct Events<'a> {
    count: &'a [f64],
    first_ago: &'a [f64],
    last_ago: &'a [f64],
    prior: (f64, f64),
}

/// What the judging found: gaps, every statement judged, and what was not judged or not
/// computed, with why.
#[derive(Default)]
struct Findings {
    gaps: Vec<GapRow>,
    assessed: Vec<GapRow>,
    judged: Judged,
    not_judged: BTreeMap<&'static str, BTreeMap<&'static str, usize>>,
    skipped: BTreeMap<String, String>,
}

impl Findings {
    /// Records judged statements; returns how many reach the evidence `threshold`.
    fn assess(&mut self, rows: impl Iterator<Item = GapRow>, threshold: f64) -> usize {
        let before = self.assessed.len();
        self.assessed.extend(rows);
        self.assessed[before..].iter().filter(|r| r.evidence >= threshold).count()
    }

    /// One statement of type `t` not judged, for the reason `why`.
    fn skip(&mut self, t: &'static str, why: &'static str) {
        *self.not_judged.entry(t).or_default().entry(why).or_default() += 1;
    }
}

impl<'i, 'a> Judge<'i, 'a> {
    fn new(inp: &'i Inputs<'a>) -> Self {
        let mut judge = Judge {
            inp,
            history_of: inp.model.buyers.iter().enumerate().map(|(k, &i)| (i, k)).collect(),
            events: None,
        };
        judge.events = match (
            inp.model.activity.column("activity:events"),
            inp.model.activity.column("activity:first_event_ago_days"),
            inp.model.activity.column("activity:last_event_ago_days"),
        ) {
            (Some(n), Some(first), Some(last)) => {
                let counts: Vec<f64> = inp.model.buyers.iter().map(|&i| n[i]).collect();
                let exposures: Vec<f64> = inp.model.buyers.iter().map(|&i| first[i].max(judge.tenure(i))).collect();
                gap::event_rate_prior(&counts, &exposures).map(|prior| Events {
                    count: n,
                    first_ago: first,
                    last_ago: last,
                    prior,
                })
            }
            _ => None,
        };
        judge
    }

    /// Whether the customer's first purchase is at least `gap_min_tenure_days` old.
    fn enough(&self, i: usize) -> bool {
        let inp = self.inp;
        inp.model.features.first_day[i].is_some_and(|d| (inp.model.as_of_day - d) as f64 >= f64::from(inp.cfg.gap_min_tenure_days))
    }

    fn tenure(&self, i: usize) -> f64 {
        self.inp.model.features.first_day[i].map_or(0.0, |d| (self.inp.model.as_of_day + 1 - d) as f64)
    }

    fn recency(&self, i: usize) -> f64 {
        self.inp.model.features.last_day[i].map_or(f64::INFINITY, |d| (self.inp.model.as_of_day + 1 - d) as f64)
    }

    /// P(alive) letting the customer drop out after any purchase, the first included: a
    /// customer who bought once and was never seen again may have left (BG/NBD's own
    /// P(alive) is one for them).
    fn alive_since(&self, h: &History, seen: f64, p_alive: f64) -> f64 {
        match self.inp.bgnbd {
            Some(bg) => bg.p_alive_any_purchase(&History::new(h.x, seen, h.t)),
            None => p_alive,
        }
    }

    /// The probability that a customer has left: the BG/NBD posterior, sharpened by the
    /// silence of the customer's other activity (events stop when a customer leaves)
    /// where the events table says anything. It weighs the frequency posterior's two
    /// states and is the satisfaction gap's evidence.
    ///
    /// A customer seen (an event) after their last order was still there then: the
    /// purchase silence before that sighting says nothing about having left, so P(alive)
    /// from purchases is taken as of the last sighting, and the silence of everything
    /// since then sharpens it. Returns P(left), the purchases' P(alive) as of the
    /// sighting, the time of the sighting (in the histories' unit) and a note of the
    /// silence.
    fn leaving(&self, i: usize, h: &History, p_alive: f64) -> (f64, f64, f64, String) {
        match self.events {
            Some(Events {
                count: n,
                first_ago: first,
                last_ago: last,
                prior,
            }) if n[i] > 0.0 => {
                let silence = last[i].min(self.recency(i));
                let seen = (h.t - silence / self.inp.cfg.time_unit.days()).clamp(h.t_x, h.t);
                let p_alive = self.alive_since(h, seen, p_alive);
                let exposure = first[i].max(self.tenure(i));
                (
                    gap::left_with_activity(p_alive, n[i], exposure, silence, prior),
                    p_alive,
                    seen,
                    format!(", no order or event for {silence:.0} days"),
                )
            }
            _ => {
                let p_alive = self.alive_since(h, h.t_x, p_alive);
                (1.0 - p_alive, p_alive, h.t_x, String::new())
            }
        }
    }

    /// Frequency: every customer with a first order and a readable answer is judged.
    /// Returns, per customer, the purchase probability their stated frequency implies
    /// for the next churn window.
    fn frequency(&self, found: &mut Findings) -> Vec<Option<f64>> {
        let (inp, cfg) = (self.inp, self.inp.cfg);
        // Each stated frequency, read once: the answer and its rate range.
        let stated_rates: Vec<Option<(&str, Option<StatedRate>)>> = inp
            .answers
            .iter()
            .map(|a| {
                a.latest
                    .get("purchase_frequency")
                    .map(|(_, answer)| (answer.as_str(), StatedRate::parse(answer)))
            })
            .collect();
        let window_years = f64::from(cfg.churn_window_days) / 365.0;
        let reported_purchase = stated_rates
            .iter()
            .map(|s| match s {
                Some((_, Some(stated))) => Some(1.0 - (-stated.value * window_years).exp()),
                _ => None,
            })
            .collect();
        let Some(bg) = inp.bgnbd else {
            found.skipped.insert(
                "frequency".into(),
                "needs a fitted BG/NBD model (orders with repeat purchases)".into(),
            );
            return reported_purchase;
        };
        let statements = self.rate_statements(found, &stated_rates, bg);
        // An honest answer names the customer's class; a misreport one of the other
        // classes (four of the five).
        const OTHER_CLASSES: f64 = 4.0;
        let pairs: Vec<(f64, f64)> = statements
            .iter()
            .map(|s| ((1.0 - s.check.inside) / OTHER_CLASSES, s.check.inside))
            .collect();
        let honesty = Honesty::fit(&pairs);
        let rows = statements
            .iter()
            .zip(&pairs)
            .map(|(s, &(mis, honest))| frequency_row(s, honesty.posterior(mis, honest), honesty.misreport_share, inp.cfg.time_unit.days()));
        let flagged = found.assess(rows, cfg.gap_evidence);
        found.judged.frequency = Some(Judgement {
            statements: statements.len(),
            gaps: flagged,
            misreport_share: round(honesty.misreport_share, 4),
            em_iterations: honesty.iterations,
        });
        reported_purchase
    }

    /// Every readable stated frequency of a buyer with enough history, checked against
    /// the posterior of their purchase rate.
    fn rate_statements<'s>(
        &self,
        found: &mut Findings,
        stated_rates: &[Option<(&'s str, Option<StatedRate>)>],
        bg: &BgNbd,
    ) -> Vec<RateStatement<'s>> {
        let (inp, cfg) = (self.inp, self.inp.cfg);
        let per_year = 365.0 / inp.cfg.time_unit.days();
        let mut statements = Vec::new();
        for (i, stated) in stated_rates.iter().enumerate() {
            let Some((answer, stated)) = *stated else {
                continue;
            };
            let Some(stated) = stated else {
                found.skip("frequency", "answer is not a frequency class or a number of purchases per year");
                continue;
            };
            let Some(&k) = self.history_of.get(&i) else {
                found.skip("frequency", "no purchase before the as-of date");
                continue;
            };
            if !self.enough(i) {
                found.skip("frequency", "first purchase more recent than gap_min_tenure_days");
                continue;
            }
            let h = inp.model.histories[k];
            // The rate while around: x repeat purchases over the whole span T if the
            // customer is still there, or over the time they were seen (to the last
            // purchase, or a later event) if they left; weighted by P(left) given
            // purchases and activity. A single purchase long ago is strong evidence
            // against a stated high rate; the posterior, not a rule, says how strong.
            let (left, _, seen, silence_text) = self.leaving(i, &h, inp.p_alive[i].unwrap_or(1.0));
            let shape = bg.r + h.x;
            let mut components = vec![(1.0 - left, shape, (bg.alpha + h.t) / per_year)];
            if left > 0.0 {
                components.push((left, shape, (bg.alpha + seen) / per_year));
            }
            let check = gap::rate_check(stated.widened(cfg.gap_rate_tolerance), &RatePosterior { components });
            statements.push(RateStatement {
                i,
                answer,
                stated,
                history: h,
                check,
                left,
                silence_text,
            });
        }
        statements
    }

    /// Category: each stated category against the customer's order lines per category,
    /// under a population mixture prior of category shares; evidence = the honesty
    /// mixture's P(misreport) with, as likelihoods, how much the lines raise or lower the
    /// probability that the category is bought at least `category_preference_ratio` of
    /// the most bought one (posterior over prior, for "preferred" and "not preferred").
    fn category(&self, found: &mut Findings, surveyed: usize) {
        let (inp, cfg) = (self.inp, self.inp.cfg);
        let cats: Vec<(&str, &[f64])> = inp.model.activity.with_prefix("category:").collect();
        if cats.is_empty() {
            found.skipped.insert(
                "category".into(),
                "needs a products table with category and orders with product_id".into(),
            );
            return;
        }
        if surveyed == 0 {
            return;
        }
        let k = cats.len();
        let flat: Vec<f64> = inp.model.buyers.iter().flat_map(|&i| cats.iter().map(move |(_, v)| v[i])).collect();
        let Some(mixture) = gap::CategoryMixture::fit(&flat, k) else {
            found.skipped.insert(
                "category".into(),
                "fewer than ten buyers with order lines in a product category".into(),
            );
            return;
        };
        let ratio = cfg.category_preference_ratio;
        let zeros = vec![0.0; k];
        let prior: Vec<f64> = (0..k)
            .map(|c| mixture.p_preferred_seeded(&zeros, c, ratio, 20_000, category_seed(cfg.seed, usize::MAX >> 16, c)))
            .collect();
        let asked = self.category_statements(found, &cats);
        let p = preference_probabilities(&mixture, &asked, ratio, cfg.seed);
        let pairs: Vec<(f64, f64)> = asked
            .iter()
            .zip(&p)
            .map(|(a, &p)| ((1.0 - p) / (1.0 - prior[a.c]), p / prior[a.c]))
            .collect();
        let honesty = Honesty::fit(&pairs);
        let check = CategoryCheck {
            cats: &cats,
            mixture: &mixture,
            prior: &prior,
            ratio,
            kappa: cfg.category_prior_strength,
            misreport_share: honesty.misreport_share,
        };
        let rows = asked
            .iter()
            .zip(&p)
            .zip(&pairs)
            .map(|((a, &p), &(mis, honest))| check.row(a, p, honesty.posterior(mis, honest)));
        let flagged = found.assess(rows, cfg.gap_evidence);
        found.judged.category = Some(CategoryJudgement {
            judgement: Judgement {
                statements: asked.len(),
                gaps: flagged,
                misreport_share: round(honesty.misreport_share, 4),
                em_iterations: honesty.iterations,
            },
            preference_ratio: ratio,
            prior: CategoryPrior {
                diffuse_weight: round(mixture.weights[0], 4),
                diffuse_precision: round(mixture.diffuse_precision, 4),
                favourite_precision: round(mixture.favourite_precision, 4),
                favourite_boost: round(mixture.favourite_boost, 4),
                converged: mixture.converged,
            },
        });
    }

    /// Every stated category of a buyer with enough history and order lines in a product
    /// category, with the buyer's lines per category.
    fn category_statements<'s>(&self, found: &mut Findings, cats: &[(&str, &[f64])]) -> Vec<CategoryStatement<'s>>
    where
        'i: 's,
    {
        let inp = self.inp;
        let mut asked = Vec::new();
        for i in 0..inp.model.features.len() {
            if inp.answers[i].categories.is_empty() {
                continue;
            }
            if !self.history_of.contains_key(&i) {
                found.skip("category", "no purchase before the as-of date");
                continue;
            }
            if !self.enough(i) {
                found.skip("category", "first purchase more recent than gap_min_tenure_days");
                continue;
            }
            let counts: Vec<f64> = cats.iter().map(|(_, v)| v[i]).collect();
            if counts.iter().sum::<f64>() <= 0.0 {
                found.skip("category", "no order line with a product category");
                continue;
            }
            for stated in &inp.answers[i].categories {
                match cats.iter().position(|(name, _)| name.eq_ignore_ascii_case(stated)) {
                    Some(c) => asked.push(CategoryStatement {
                        i,
                        c,
                        stated: stated.as_str(),
                        counts: counts.clone(),
                    }),
                    None => found.skip("category", "stated category is not a product category"),
                }
            }
        }
        asked
    }

    /// Satisfaction: the stated level against a latent-class model of satisfaction
    /// fitted over all buyers, from their complaints, tickets, low reviews, returns and
    /// whether they left (answers included, with their own misreport rate).
    fn satisfaction(&self, found: &mut Findings, surveyed: usize) {
        if surveyed == 0 {
            return;
        }
        let (signals, answered) = self.service_records(found);
        let Some(model) = gap::SatisfactionModel::fit(&signals) else {
            found.skipped.insert(
                "satisfaction".into(),
                "no buyer answered a satisfaction, NPS or will_repurchase question".into(),
            );
            return;
        };
        let share = model.misreport_share();
        let rows = answered.iter().map(|a| satisfaction_row(a, &model, share));
        let flagged = found.assess(rows, self.inp.cfg.gap_evidence);
        found.judged.satisfaction = Some(SatisfactionJudgement {
            judgement: Judgement {
                statements: answered.len(),
                gaps: flagged,
                misreport_share: round(share, 4),
                em_iterations: model.iterations,
            },
            p_complaint_per_order: [
                round(model.satisfied.complaint_rate, 4),
                round(model.dissatisfied.complaint_rate, 4),
            ],
            left_share: [round(model.satisfied.left_share, 4), round(model.dissatisfied.left_share, 4)],
            satisfied_share: round(model.satisfied.share, 4),
        });
    }

    /// Every buyer's service record (complaints, tickets, low reviews, returns, P(left)),
    /// which the satisfaction model is fitted on, and the answers to judge against theirs.
    fn service_records(&self, found: &mut Findings) -> (Vec<gap::ServiceSignals>, Vec<Answered>) {
        let inp = self.inp;
        let col = |name: &str| inp.model.activity.column(name);
        let (complaints, tickets) = (col("events:complaint"), col("events:support_ticket"));
        let (low, rated) = (col("service:reviews_low"), col("activity:reviews_rated"));
        let (returned, lines) = (col("activity:returned_lines"), col("activity:lines"));
        let at = |c: Option<&[f64]>, i: usize| c.map_or(0.0, |c| c[i]);
        let mut stated: Vec<Option<(gap::Stated, f64, String)>> = inp.answers.iter().map(stated_satisfaction).collect();
        for (i, (answers, level)) in inp.answers.iter().zip(&stated).enumerate() {
            let asked = ["satisfaction", "nps", "will_repurchase"]
                .iter()
                .any(|q| answers.latest.contains_key(*q));
            if asked && level.is_none() {
                found.skip("satisfaction", "answer is not a satisfaction score, an NPS or yes/no");
            } else if asked && !self.history_of.contains_key(&i) {
                found.skip("satisfaction", "no purchase before the as-of date");
            }
        }
        let mut signals = Vec::with_capacity(inp.model.buyers.len());
        let mut answered = Vec::new();
        for (k, &i) in inp.model.buyers.iter().enumerate() {
            let h = inp.model.histories[k];
            let (left, _, _, _) = self.leaving(i, &h, inp.p_alive[i].unwrap_or(1.0));
            let stated = stated[i].take();
            let c = gap::ServiceSignals {
                complaints: at(complaints, i),
                tickets: at(tickets, i),
                orders: h.x + 1.0,
                low_reviews: at(low, i),
                rated_reviews: at(rated, i),
                returned_lines: at(returned, i),
                lines: at(lines, i),
                left,
                stated: stated.as_ref().map(|s| s.0),
            };
            signals.push(c);
            match stated {
                Some((gap::Stated::Neutral, _, _)) => {
                    found.skip("satisfaction", "neutral answer (3 of 5, NPS 7–8): nothing to contradict");
                }
                Some((_, value, text)) => answered.push(Answered {
                    i,
                    signals: c,
                    text,
                    stated: value,
                }),
                None => {}
            }
        }
        (signals, answered)
    }

    /// Profile: the stated channel against the one used most, and the conflicts of the
    /// company's own records. Returns how many profile gaps there are.
    fn profile(&self, found: &mut Findings) -> usize {
        let inp = self.inp;
        let n = inp.model.features.len();
        let mut profile = 0;
        for i in 0..n {
            let Some((_, stated)) = inp.answers[i].latest.get("preferred_channel") else {
                continue;
            };
            let Some(used) = inp.main_channel[i].as_deref() else { continue };
            let lines: f64 = inp.model.activity.with_prefix("channel:").map(|(_, v)| v[i]).sum();
            if lines < 3.0 || used.eq_ignore_ascii_case(stated) {
                continue;
            }
            let share = inp.model.activity.column(&format!("channel:{used}")).map_or(0.0, |c| c[i]) / lines;
            let stated_share = inp.model.activity.column(&format!("channel:{stated}")).map_or(0.0, |c| c[i]) / lines;
            if share < 0.5 {
                continue;
            }
            profile += 1;
            found.gaps.push(GapRow {
                customer: i,
                gap_type: GapType::Profile,
                subject: "preferred_channel".into(),
                reported: Some(round(stated_share, 4)),
                observed: Some(round(share, 4)),
                reported_text: format!("prefers {stated}"),
                observed_text: format!("{:.0} % of order lines via {used}", 100.0 * share),
                delta: Some(stated_share.max(0.01) / share),
                // The share of order lines through the channel used most.
                evidence: share,
                direction: Direction::Over,
                action: format!("contact via {used}, the channel the customer actually uses; update the profile"),
            });
        }
        for (i, subject, held, action) in inp.profile_issues {
            profile += 1;
            found.gaps.push(GapRow {
                customer: *i,
                gap_type: GapType::Profile,
                subject: subject.clone(),
                reported: None,
                observed: None,
                reported_text: held.clone(),
                observed_text: "the company's records cannot all be right".into(),
                delta: None,
                evidence: 1.0,
                direction: Direction::Over,
                action: action.clone(),
            });
        }
        if !inp.answers.iter().any(|a| a.latest.contains_key("preferred_channel")) {
            found.skipped.insert(
                "profile".into(),
                "needs preferred_channel survey answers and orders with a channel".into(),
            );
        }
        profile
    }
}

/// A stated preferred category, with the buyer's order lines per category.
struct CategoryStatement<'a> {
    i: usize,
    /// The stated category's index.
    c: usize,
    stated: &'a str,
    counts: Vec<f64>,
}

/// The seed of the Monte Carlo estimate for customer row `i` (or a marker) and category
/// `c`.
fn category_seed(seed: u64, i: usize, c: usize) -> u64 {
    seed ^ ((i as u64) << 16) ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// P(the stated category is bought at least `ratio` × the most bought one) under the
/// mixture, given each statement's lines: one Monte Carlo estimate per distinct (lines
/// per category, category), seeded by that content, so the same lines give the same
/// evidence.
fn preference_probabilities(mixture: &gap::CategoryMixture, asked: &[CategoryStatement<'_>], ratio: f64, seed: u64) -> Vec<f64> {
    use rayon::prelude::*;
    let key = |c: usize, counts: &[f64]| -> (usize, Vec<u64>) { (c, counts.iter().map(|v| v.to_bits()).collect()) };
    let distinct: BTreeSet<(usize, Vec<u64>)> = asked.iter().map(|a| key(a.c, &a.counts)).collect();
    let estimates: HashMap<(usize, Vec<u64>), f64> = distinct
        .into_par_iter()
        .map(|(c, bits)| {
            let counts: Vec<f64> = bits.iter().map(|b| f64::from_bits(*b)).collect();
            let s = bits
                .iter()
                .fold(category_seed(seed, 0, c), |h, b| (h ^ b).wrapping_mul(0x0100_0000_01B3));
            let p = mixture.p_preferred_seeded(&counts, c, ratio, 2000, s);
            ((c, bits), p)
        })
        .collect();
    asked.iter().map(|a| estimates[&key(a.c, &a.counts)]).collect()
}

/// What a judged category statement's row is written from.
struct CategoryCheck<'a> {
    cats: &'a [(&'a str, &'a [f64])],
    mixture: &'a gap::CategoryMixture,
    /// P(preferred) for a customer of whom nothing is known, per category.
    prior: &'a [f64],
    ratio: f64,
    /// Pseudo-lines of the population mix added to a customer's own lines.
    kappa: f64,
    misreport_share: f64,
}

impl CategoryCheck<'_> {
    /// The row of one statement with P(preferred) `p` and its evidence.
    fn row(&self, a: &CategoryStatement<'_>, p: f64, evidence: f64) -> GapRow {
        let (c, counts, stated, ratio) = (a.c, &a.counts, a.stated, self.ratio);
        let total: f64 = counts.iter().sum();
        let smoothed = |j: usize| (counts[j] + self.kappa * self.mixture.mix[j]) / (total + self.kappa);
        let top = (0..counts.len())
            .filter(|&j| j != c)
            .max_by(|&x, &y| counts[x].total_cmp(&counts[y]).then(y.cmp(&x)))
            .unwrap_or(c);
        let (observed, reported) = (smoothed(c), ratio * smoothed(top).max(smoothed(c)));
        GapRow {
            customer: a.i,
            gap_type: GapType::Category,
            subject: stated.to_string(),
            reported: Some(round(reported, 4)),
            observed: Some(round(observed, 4)),
            reported_text: format!("prefers {stated}"),
            observed_text: format!(
                "{} of {} order lines in {stated}; most in {} ({}); P(bought at least {ratio} × the most bought \
                 category) {p:.2e}, {:.2} for a customer of whom nothing is known; share of misreported \
                 categories {:.3}",
                counts[c], total, self.cats[top].0, counts[top], self.prior[c], self.misreport_share
            ),
            delta: Some(reported / observed.max(1e-12)),
            evidence,
            direction: Direction::Over,
            action: format!("offer {stated}: the stated interest has not turned into purchases"),
        }
    }
}

/// A stated purchase frequency and its check against the rate posterior.
struct RateStatement<'a> {
    i: usize,
    answer: &'a str,
    stated: StatedRate,
    history: History,
    check: gap::RateCheck,
    left: f64,
    silence_text: String,
}

/// The judged statement of one stated frequency, with its evidence.
fn frequency_row(s: &RateStatement<'_>, evidence: f64, misreport_share: f64, unit_days: f64) -> GapRow {
    let h = s.history;
    let dir = s.check.direction();
    let range = if s.stated.high.is_finite() {
        format!("{:.1}–{:.1}", s.stated.low, s.stated.high)
    } else {
        format!("{:.1} or more", s.stated.low)
    };
    GapRow {
        customer: s.i,
        gap_type: GapType::Frequency,
        subject: "purchase_frequency".into(),
        reported: Some(s.stated.value),
        observed: Some(round(s.check.mean, 3)),
        reported_text: format!("{} (≈{} orders/year; the class is {range} a year)", s.answer, s.stated.value),
        observed_text: format!(
            "{} over {:.0} days{}; posterior rate {:.1} orders/year, P(rate in the stated class) {:.2e}, \
             P(left) {:.2}; share of misreported frequencies {:.3}",
            counted(h.x + 1.0, "order"),
            h.t * unit_days,
            s.silence_text,
            s.check.mean,
            s.check.inside,
            s.left,
            misreport_share
        ),
        delta: Some(s.stated.value / s.check.mean.max(1e-9)),
        evidence,
        direction: dir,
        action: match dir {
            Direction::Over => "re-engage: a reminder or offer timed to the rhythm the customer states".into(),
            Direction::Under => "recognise a more loyal customer than they think: loyalty programme or subscription offer".into(),
        },
    }
}

/// A satisfaction answer and the service record it is judged against.
struct Answered {
    i: usize,
    signals: gap::ServiceSignals,
    text: String,
    /// The answer on a 0–1 scale.
    stated: f64,
}

/// A customer's stated satisfaction: satisfaction 1–5 (4–5 satisfied, 1–2 dissatisfied),
/// else NPS 0–10 (promoters 9–10, detractors 0–6), else will_repurchase; with the answer
/// on a 0–1 scale and in words.
fn stated_satisfaction(answers: &Answers) -> Option<(gap::Stated, f64, String)> {
    let a = &answers.latest;
    let num = |q: &str| a.get(q).and_then(|(_, v)| v.trim().parse::<f64>().ok()).filter(|v| v.is_finite());
    if let Some(v) = num("satisfaction") {
        return Some((
            gap::Stated::of_score(v, 4.0, 2.0),
            (v - 1.0) / 4.0,
            format!("satisfaction {v} of 5"),
        ));
    }
    if let Some(v) = num("nps") {
        return Some((gap::Stated::of_score(v, 9.0, 6.0), v / 10.0, format!("NPS {v} of 10")));
    }
    let b = a.get("will_repurchase").and_then(|(_, v)| yes_no(v))?;
    Some((
        if b { gap::Stated::Satisfied } else { gap::Stated::Dissatisfied },
        f64::from(u8::from(b)),
        format!("will repurchase: {}", if b { "yes" } else { "no" }),
    ))
}

/// The judged statement of one satisfaction answer: evidence = the model's posterior
/// that the answer misstates the class the service record points to.
fn satisfaction_row(a: &Answered, model: &gap::SatisfactionModel, share: f64) -> GapRow {
    let c = &a.signals;
    let p_sat = model.p_satisfied(c);
    let by_behaviour = model.p_satisfied_by_behaviour(c);
    let (dir, evidence) = match c.stated {
        Some(gap::Stated::Satisfied) => (Direction::Over, 1.0 - p_sat),
        _ => (Direction::Under, p_sat),
    };
    GapRow {
        customer: a.i,
        gap_type: GapType::Satisfaction,
        subject: "satisfaction".into(),
        reported: Some(round(a.stated, 4)),
        observed: Some(round(by_behaviour, 4)),
        reported_text: a.text.clone(),
        observed_text: format!(
            "{} and {} over {}, {} of {} reviews rated low, {} of {} order lines returned, P(left) {:.2}; \
             P(satisfied) from behaviour {:.2}; share of misreported satisfaction {:.3}",
            counted(c.complaints, "complaint"),
            counted(c.tickets, "support ticket"),
            counted(c.orders, "order"),
            c.low_reviews,
            c.rated_reviews,
            c.returned_lines,
            c.lines,
            c.left,
            by_behaviour,
            share
        ),
        delta: Some(a.stated.max(0.01) / by_behaviour.max(0.01)),
        evidence,
        direction: dir,
        action: match dir {
            Direction::Over => "care call: says satisfied but the service record says otherwise — ask what went wrong".into(),
            Direction::Under => "service recovery: says dissatisfied yet buys without complaint — ask what to fix".into(),
        },
    }
}

/// A shortfall that is both significant after the correction and large enough to act on.
fn significant(r: &KnowledgeRow, cfg: &ModelsConfig) -> bool {
    r.q_value < cfg.knowledge_fdr && r.gap <= -MIN_KNOWLEDGE_GAP
}

/// Subject → per customer: `Some(true)` aware or using, `Some(false)` not, `None`
/// unknown. From the survey's `aware:` answers, the `feature:` events, and (for buyers
/// only) the categories bought.
type Subjects = BTreeMap<String, Vec<Option<bool>>>;
/// (segment id, segment name) → the indices of its members.
type Members = BTreeMap<(String, String), Vec<usize>>;

fn knowledge_gaps(inp: &Inputs<'_>, gaps: &mut Vec<GapRow>) -> (Vec<KnowledgeRow>, Vec<KnowledgeSummary>) {
    let subjects = knowledge_subjects(inp);
    let mut members: Members = BTreeMap::new();
    for (i, segs) in inp.segments.iter().enumerate() {
        for (id, name) in segs {
            members.entry((id.clone(), name.clone())).or_default().push(i);
        }
    }
    let rows = knowledge_rows(&subjects, &members, inp.cfg);
    let significant: Vec<&KnowledgeRow> = rows.iter().filter(|r| significant(r, inp.cfg)).collect();
    customer_knowledge_gaps(&significant, &subjects, &members, gaps);
    let report = significant
        .iter()
        .filter(|r| r.rank <= 3)
        .map(|r| KnowledgeSummary {
            segment_id: r.segment_id.clone(),
            segment: r.segment.clone(),
            subject: r.subject.clone(),
            rank: r.rank,
            segment_rate: round(r.segment_rate, 4),
            reference_rate: round(r.reference_rate, 4),
            q_value: r.q_value,
            customers_affected: r.customers_affected,
        })
        .collect();
    (rows, report)
}

fn knowledge_subjects(inp: &Inputs<'_>) -> Subjects {
    let n = inp.model.features.len();
    let mut subjects: Subjects = BTreeMap::new();
    for (i, a) in inp.answers.iter().enumerate() {
        for (q, (_, v)) in &a.latest {
            if let (Some(s), Some(b)) = (q.strip_prefix("aware:"), yes_no(v)) {
                subjects.entry(format!("aware:{s}")).or_insert_with(|| vec![None; n])[i] = Some(b);
            }
        }
    }
    for (s, v) in inp.model.activity.with_prefix("feature:") {
        subjects.insert(format!("feature:{s}"), v.iter().map(|x| Some(*x > 0.0)).collect());
    }
    let is_buyer: Vec<bool> = (0..n).map(|i| inp.model.features.purchase_days[i] > 0.0).collect();
    for (s, v) in inp.model.activity.with_prefix("category:") {
        subjects.insert(format!("category:{s}"), (0..n).map(|i| is_buyer[i].then_some(v[i] > 0.0)).collect());
    }
    subjects
}

/// Yes answers and answers among `who`.
fn yes_of(known: &[Option<bool>], who: impl Iterator<Item = usize>) -> (f64, f64) {
    who.filter_map(|i| known[i])
        .fold((0.0, 0.0), |(y, t), b| (y + f64::from(u8::from(b)), t + 1.0))
}

/// Every segment's rate of every subject against the rest of the customers (a
/// two-proportion test where both sides have 20 answers or more), q-values by
/// Benjamini–Hochberg over all of them, ranked within each segment: the significant
/// shortfalls first, largest first.
fn knowledge_rows(subjects: &Subjects, members: &Members, cfg: &ModelsConfig) -> Vec<KnowledgeRow> {
    let mut rows = Vec::new();
    for (subject, known) in subjects {
        let (all_yes, all_n) = yes_of(known, 0..known.len());
        for ((id, name), m) in members {
            let (yes, tot) = yes_of(known, m.iter().copied());
            if tot < 20.0 || all_n - tot < 20.0 {
                continue;
            }
            let (gap, p) = two_proportion(yes, tot, all_yes - yes, all_n - tot);
            rows.push(KnowledgeRow {
                segment_id: id.clone(),
                segment: name.clone(),
                subject: subject.clone(),
                members: m.len(),
                segment_rate: yes / tot,
                reference_rate: (all_yes - yes) / (all_n - tot),
                gap,
                p_value: p,
                q_value: 1.0,
                customers_affected: m.iter().filter(|&&i| known[i] == Some(false)).count(),
                rank: 0,
            });
        }
    }
    let q = benjamini_hochberg(&rows.iter().map(|r| r.p_value).collect::<Vec<_>>());
    for (r, q) in rows.iter_mut().zip(q) {
        r.q_value = q;
    }
    rows.sort_by(|a, b| {
        a.segment_id
            .cmp(&b.segment_id)
            .then(significant(b, cfg).cmp(&significant(a, cfg)))
            .then(a.gap.total_cmp(&b.gap))
            .then(a.subject.cmp(&b.subject))
    });
    let mut last = String::new();
    let mut rank = 0;
    for r in rows.iter_mut() {
        if r.segment_id != last {
            last = r.segment_id.clone();
            rank = 0;
        }
        rank += 1;
        r.rank = rank;
    }
    rows
}

/// One knowledge gap per customer and subject, from the strongest significant shortfall
/// of a segment they belong to. Buying fewer categories follows from buying less; only
/// awareness and feature use make a customer-level knowledge gap.
fn customer_knowledge_gaps(significant: &[&KnowledgeRow], subjects: &Subjects, members: &Members, gaps: &mut Vec<GapRow>) {
    let mut seen: BTreeSet<(usize, String)> = BTreeSet::new();
    let mut by_strength = significant.to_vec();
    by_strength.sort_by(|a, b| a.gap.total_cmp(&b.gap).then(a.segment_id.cmp(&b.segment_id)));
    for r in by_strength.iter().filter(|r| !r.subject.starts_with("category:")) {
        let known = &subjects[&r.subject];
        for &i in &members[&(r.segment_id.clone(), r.segment.clone())] {
            if known[i] == Some(false) && seen.insert((i, r.subject.clone())) {
                gaps.push(knowledge_row(r, i));
            }
        }
    }
}

/// The gap row of customer `i`, a member of the segment of `r` who does not know or use
/// its subject.
fn knowledge_row(r: &KnowledgeRow, i: usize) -> GapRow {
    let what = r.subject.split_once(':').map_or(r.subject.as_str(), |(_, s)| s);
    GapRow {
        customer: i,
        gap_type: GapType::Knowledge,
        subject: r.subject.clone(),
        reported: Some(0.0),
        observed: Some(round(r.reference_rate, 4)),
        reported_text: format!("not aware of / not using {what}"),
        observed_text: format!(
            "{:.0} % of {} vs {:.0} % of other customers",
            100.0 * r.segment_rate,
            r.segment,
            100.0 * r.reference_rate
        ),
        delta: Some(r.segment_rate / r.reference_rate.max(1e-9)),
        evidence: 1.0 - r.q_value,
        direction: Direction::Under,
        action: format!("product education: show what {what} is and how to use it"),
    }
}

/// (segment, gap type) → the customers with such a gap, and the log Δ of those gaps.
type SegmentGaps = BTreeMap<((String, String), GapType), (BTreeSet<usize>, Vec<f64>)>;

fn by_segment_and_type(gaps: &[GapRow], segments: &[Vec<(String, String)>]) -> SegmentGaps {
    let mut acc = SegmentGaps::new();
    for g in gaps {
        for s in &segments[g.customer] {
            let e = acc.entry((s.clone(), g.gap_type)).or_default();
            e.0.insert(g.customer);
            if let Some(d) = g.delta.filter(|d| *d > 0.0) {
                e.1.push(d.ln());
            }
        }
    }
    acc
}

/// Per segment and gap type: the share of members with such a gap and the mean log Δ of
/// those gaps with a normal 95 % interval → the `gap_summary` table.
pub fn summary_batch(gaps: &[GapRow], segments: &[Vec<(String, String)>]) -> Result<RecordBatch> {
    let mut members: BTreeMap<(String, String), usize> = BTreeMap::new();
    for segs in segments {
        for s in segs {
            *members.entry(s.clone()).or_default() += 1;
        }
    }
    let acc = by_segment_and_type(gaps, segments);
    struct Row<'k> {
        key: &'k ((String, String), GapType),
        members: usize,
        with: usize,
        mean: Option<f64>,
        ci: Option<(f64, f64)>,
    }
    let rows: Vec<Row<'_>> = acc
        .iter()
        .map(|(key, (who, logs))| {
            let m = members[&key.0];
            let n = logs.len() as f64;
            let mu = logs.iter().sum::<f64>() / n.max(1.0);
            let sd = (logs.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
            let half = if n >= 2.0 { 1.96 * sd / n.sqrt() } else { f64::NAN };
            Row {
                key,
                members: m,
                with: who.len(),
                mean: (n > 0.0).then_some(mu),
                ci: (n >= 2.0).then_some((mu - half, mu + half)),
            }
        })
        .collect();
    let mut c = Columns::default();
    c.text("segment_id", false, rows.iter().map(|r| Some(r.key.0 .0.as_str())));
    c.text("segment", false, rows.iter().map(|r| Some(r.key.0 .1.as_str())));
    c.text("gap_type", false, rows.iter().map(|r| Some(r.key.1.name())));
    c.ints("members", false, rows.iter().map(|r| Some(r.members as i64)));
    c.ints("customers_with_gap", false, rows.iter().map(|r| Some(r.with as i64)));
    c.floats("share", false, rows.iter().map(|r| Some(r.with as f64 / r.members.max(1) as f64)));
    c.floats("mean_log_delta", true, rows.iter().map(|r| r.mean));
    c.floats("ci_low", true, rows.iter().map(|r| r.ci.map(|c| c.0)));
    c.floats("ci_high", true, rows.iter().map(|r| r.ci.map(|c| c.1)));
    c.finish()
}

pub fn gaps_batch(ids: &[String], rows: &[GapRow]) -> Result<RecordBatch> {
    let mut c = Columns::default();
    c.text("customer_id", false, rows.iter().map(|r| Some(ids[r.customer].as_str())));
    c.text("gap_type", false, rows.iter().map(|r| Some(r.gap_type.name())));
    c.text("subject", false, rows.iter().map(|r| Some(r.subject.as_str())));
    c.floats("reported", true, rows.iter().map(|r| r.reported));
    c.floats("observed", true, rows.iter().map(|r| r.observed));
    c.floats("delta", true, rows.iter().map(|r| r.delta));
    c.floats("log_delta", true, rows.iter().map(|r| r.delta.filter(|d| *d > 0.0).map(f64::ln)));
    c.floats("evidence", false, rows.iter().map(|r| Some(r.evidence)));
    c.text("direction", false, rows.iter().map(|r| Some(r.direction.name())));
    c.text("action", false, rows.iter().map(|r| Some(r.action.as_str())));
    c.text("reported_text", false, rows.iter().map(|r| Some(r.reported_text.as_str())));
    c.text("observed_text", false, rows.iter().map(|r| Some(r.observed_text.as_str())));
    c.finish()
}

pub fn knowledge_batch(rows: &[KnowledgeRow]) -> Result<RecordBatch> {
    let mut c = Columns::default();
    c.text("segment_id", false, rows.iter().map(|r| Some(r.segment_id.as_str())));
    c.text("segment", false, rows.iter().map(|r| Some(r.segment.as_str())));
    c.text("subject", false, rows.iter().map(|r| Some(r.subject.as_str())));
    c.ints("members", false, rows.iter().map(|r| Some(r.members as i64)));
    c.floats("segment_rate", false, rows.iter().map(|r| Some(r.segment_rate)));
    c.floats("reference_rate", false, rows.iter().map(|r| Some(r.reference_rate)));
    c.floats("gap", false, rows.iter().map(|r| Some(r.gap)));
    c.floats("p_value", false, rows.iter().map(|r| Some(r.p_value)));
    c.floats("q_value", false, rows.iter().map(|r| Some(r.q_value)));
    c.ints("customers_affected", false, rows.iter().map(|r| Some(r.customers_affected as i64)));
    c.ints("rank", false, rows.iter().map(|r| Some(r.rank as i64)));
    c.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subject known for every customer: the first `yes` of each block of `block`
    /// customers say yes, the rest no.
    fn known(blocks: &[(usize, usize)]) -> Vec<Option<bool>> {
        blocks.iter().flat_map(|&(n, yes)| (0..n).map(move |i| Some(i < yes))).collect()
    }

    fn members(sizes: &[(&str, std::ops::Range<usize>)]) -> Members {
        sizes
            .iter()
            .map(|(id, r)| ((id.to_string(), format!("segment {id}")), r.clone().collect()))
            .collect()
    }

    #[test]
    fn a_segment_that_does_not_know_what_the_others_use_ranks_first() {
        // Segment a: 10 of 100 use the app; b and c: 60 of 100 each.
        let subjects: Subjects = [("feature:app".to_string(), known(&[(100, 10), (100, 60), (100, 60)]))].into();
        let m = members(&[("a", 0..100), ("b", 100..200), ("c", 200..300)]);
        let cfg = ModelsConfig::default();
        let rows = knowledge_rows(&subjects, &m, &cfg);
        assert_eq!(rows.len(), 3);
        let a = rows.iter().find(|r| r.segment_id == "a").unwrap();
        assert!((a.segment_rate - 0.1).abs() < 1e-12 && (a.reference_rate - 0.6).abs() < 1e-12);
        assert!(a.gap < 0.0 && significant(a, &cfg), "{a:?}");
        assert_eq!((a.rank, a.customers_affected, a.members), (1, 90, 100));
        for r in rows.iter().filter(|r| r.segment_id != "a") {
            assert!(!significant(r, &cfg), "{r:?}");
            assert!(r.q_value >= r.p_value);
        }
    }

    #[test]
    fn groups_of_fewer_than_twenty_answers_are_not_tested() {
        let mut k = known(&[(15, 0), (100, 60)]);
        k.extend([None; 30]);
        let subjects: Subjects = [("aware:app".to_string(), k)].into();
        // Segment a answers 15 times; segment b has 30 members who never answered.
        let m = members(&[("a", 0..15), ("b", 115..145)]);
        assert!(knowledge_rows(&subjects, &m, &ModelsConfig::default()).is_empty());
    }

    #[test]
    fn one_customer_gap_per_subject_from_the_strongest_segment_and_none_for_categories() {
        let row = |seg: &str, subject: &str, gap: f64| KnowledgeRow {
            segment_id: seg.into(),
            segment: format!("segment {seg}"),
            subject: subject.into(),
            members: 3,
            segment_rate: 0.1,
            reference_rate: 0.5,
            gap,
            p_value: 0.001,
            q_value: 0.002,
            customers_affected: 2,
            rank: 1,
        };
        let subjects: Subjects = [
            ("aware:app".to_string(), vec![Some(false), Some(false), Some(true), None]),
            ("category:shoes".to_string(), vec![Some(false); 4]),
        ]
        .into();
        // Customer 1 is in both segments; customer 3 never answered.
        let m = members(&[("a", 0..2), ("b", 1..4)]);
        let (weak, strong, category) = (
            row("a", "aware:app", -0.2),
            row("b", "aware:app", -0.4),
            row("a", "category:shoes", -0.5),
        );
        let mut gaps = Vec::new();
        customer_knowledge_gaps(&[&weak, &strong, &category], &subjects, &m, &mut gaps);
        let got: Vec<(usize, &str)> = gaps.iter().map(|g| (g.customer, g.subject.as_str())).collect();
        assert_eq!(got, [(1, "aware:app"), (0, "aware:app")]);
        let g = &gaps[0];
        assert_eq!((g.gap_type, g.direction), (GapType::Knowledge, Direction::Under));
        assert_eq!(g.observed_text, "10 % of segment b vs 50 % of other customers");
        assert_eq!(g.action, "product education: show what app is and how to use it");
        assert!((g.evidence - 0.998).abs() < 1e-12 && (g.delta.unwrap() - 0.2).abs() < 1e-12);
    }

    fn answers(pairs: &[(&str, &str)]) -> Answers {
        Answers {
            latest: pairs.iter().map(|(q, v)| (q.to_string(), (0, v.to_string()))).collect(),
            categories: BTreeSet::new(),
        }
    }

    #[test]
    fn stated_satisfaction_reads_the_score_then_nps_then_will_repurchase() {
        let (s, v, text) = stated_satisfaction(&answers(&[("satisfaction", "5"), ("nps", "0")])).unwrap();
        assert_eq!((s, v, text.as_str()), (gap::Stated::Satisfied, 1.0, "satisfaction 5 of 5"));
        let (s, v, _) = stated_satisfaction(&answers(&[("satisfaction", " 2 ")])).unwrap();
        assert_eq!((s, v), (gap::Stated::Dissatisfied, 0.25));
        let (s, v, text) = stated_satisfaction(&answers(&[("nps", "7"), ("will_repurchase", "yes")])).unwrap();
        assert_eq!((s, v, text.as_str()), (gap::Stated::Neutral, 0.7, "NPS 7 of 10"));
        let (s, _, text) = stated_satisfaction(&answers(&[("satisfaction", "n/a"), ("will_repurchase", "N")])).unwrap();
        assert_eq!((s, text.as_str()), (gap::Stated::Dissatisfied, "will repurchase: no"));
        assert!(stated_satisfaction(&answers(&[("will_repurchase", "maybe"), ("nps", "NaN")])).is_none());
    }

    #[test]
    fn yes_and_no_in_their_usual_spellings() {
        for y in ["yes", " Y", "TRUE", "1"] {
            assert_eq!(yes_no(y), Some(true), "{y}");
        }
        for n in ["no", "n ", "False", "0"] {
            assert_eq!(yes_no(n), Some(false), "{n}");
        }
        assert_eq!(yes_no("sometimes"), None);
        assert_eq!(counted(1.0, "order"), "1 order");
        assert_eq!(counted(3.0, "order"), "3 orders");
    }
}
