//! The synthetic company: people, their records in three systems, and what they do.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{Duration, NaiveDate, NaiveDateTime};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::dirt::{self, Planted};
use crate::write::{csv_field, io, Out};
use crate::Result;

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub customers: usize,
    pub seed: u64,
    pub out: PathBuf,
    /// Plant bad rows (on by default; off gives a clean company).
    pub dirt: bool,
    /// The assumptions of the company's world (how tastes spread, how honest answers
    /// are, …): switches so that the gap analysis is tested against more than one world.
    pub world: World,
}

/// How customers spread their purchases over categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Taste {
    /// One preferred category takes about two thirds of a customer's lines.
    Concentrated,
    /// Category shares drawn from a Dirichlet(0.7, …): several categories each.
    Diffuse,
}

/// Which misstatements are planted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Misreports {
    /// Only over-statement (says more than does).
    Over,
    /// Over- and under-statement.
    Both,
}

/// What a customer's (dis)satisfaction shows in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SatisfactionDriver {
    /// Service experience: dissatisfied customers complain, open tickets, rate low and
    /// return more; whether they leave does not depend on it.
    Service,
    /// Leaving: dissatisfied customers drop out much sooner; service signals barely differ.
    Dropout,
}

/// The generator's assumptions about the world it writes.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct World {
    pub taste: Taste,
    /// Respondents may name up to three preferred categories (one answer row each).
    pub multi_category: bool,
    /// The chance that each survey statement (frequency, category, satisfaction) is honest.
    pub honesty: f64,
    pub misreports: Misreports,
    pub satisfaction: SatisfactionDriver,
    /// Days from the first possible signup to the export.
    pub history_days: u32,
}

impl Default for World {
    fn default() -> Self {
        World {
            taste: Taste::Concentrated,
            multi_category: false,
            honesty: 0.9,
            misreports: Misreports::Both,
            satisfaction: SatisfactionDriver::Service,
            history_days: 730,
        }
    }
}

impl GenerateOptions {
    pub fn new(customers: usize, seed: u64, out: impl Into<PathBuf>) -> Self {
        Self {
            customers,
            seed,
            out: out.into(),
            dirt: true,
            world: World::default(),
        }
    }
}

/// What was written.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    pub persons: usize,
    pub source_ids: usize,
    pub order_lines: usize,
    pub events: usize,
    pub survey_answers: usize,
    pub planted: BTreeMap<String, Planted>,
}

const FIRST: &[&str] = &[
    "Ada", "Ben", "Chloé", "Dev", "Elif", "Finn", "Grace", "Hiro", "Isla", "Jonas", "Kemi", "Liam", "Maya", "Noah", "Olga", "Priya",
    "Quinn", "Rosa", "Sam", "Tariq", "Uma", "Viktor", "Wen", "Ximena", "Yusuf", "Zoë", "Ana", "Luca", "Mei", "Omar",
];
const LAST: &[&str] = &[
    "García", "Smith", "Jones", "Okafor", "Nguyen", "Müller", "Rossi", "Kowalski", "Patel", "Brown", "Taylor", "Wilson", "Evans", "Khan",
    "Silva", "O'Brien", "Novak", "Larsen", "Dubois", "Tanaka",
];
const CITIES: &[&str] = &[
    "London",
    "Manchester",
    "Leeds",
    "Bristol",
    "Glasgow",
    "Cardiff",
    "Belfast",
    "Brighton",
    "York",
    "Leicester",
];
const CATEGORIES: &[&str] = &["books", "music", "games", "home", "garden", "kitchen", "beauty", "sports"];
const FEATURES: &[&str] = &["click_collect", "wishlist", "subscription", "gift_cards"];
const CHANNELS: &[&str] = &["web", "app", "store"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Shop,
    App,
    Crm,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Shop => "shop",
            Source::App => "app",
            Source::Crm => "crm",
        }
    }
    fn for_channel(c: &str) -> Self {
        match c {
            "app" => Source::App,
            "store" => Source::Crm,
            _ => Source::Shop,
        }
    }
}

struct Record {
    source: Source,
    id: String,
    email: Option<String>,
    phone: Option<String>,
    city: String,
}

struct Person {
    id: String,
    name: String,
    birth: NaiveDate,
    gender: &'static str,
    signup: NaiveDateTime,
    records: Vec<Record>,
    rate: f64,
    dropout: f64,
    /// The most bought category; `taste` holds every category's share.
    category: usize,
    taste: Vec<f64>,
    channel: &'static str,
    aware: Vec<bool>,
    /// Truly satisfied with the company; `satisfaction` is the true score (4–5 if so,
    /// else 1–2), which an honest respondent states.
    satisfied: bool,
    satisfaction: u32,
    decoy_of: Option<String>,
}

/// A standard normal draw (Box–Muller).
pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A Poisson draw of mean `mean` (Knuth's product of uniforms; the means here are small).
fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> usize {
    let limit = (-mean).exp();
    let (mut k, mut prod) = (0, rng.random::<f64>());
    while prod > limit {
        k += 1;
        prod *= rng.random::<f64>();
    }
    k
}

/// A draw from the discrete distribution `weights` (summing to one).
fn pick(rng: &mut ChaCha8Rng, weights: &[f64]) -> usize {
    let mut u: f64 = rng.random();
    for (j, w) in weights.iter().enumerate() {
        u -= w;
        if u < 0.0 {
            return j;
        }
    }
    weights.len() - 1
}

/// An exponential draw with the given rate.
pub(crate) fn exp(rng: &mut ChaCha8Rng, rate: f64) -> f64 {
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    -u.ln() / rate
}

fn frequency_class(per_year: f64) -> &'static str {
    if per_year >= 40.0 {
        "weekly"
    } else if per_year >= 9.0 {
        "monthly"
    } else if per_year >= 3.0 {
        "quarterly"
    } else if per_year >= 0.8 {
        "yearly"
    } else {
        "rarely"
    }
}

const FREQUENCIES: &[&str] = &["rarely", "yearly", "quarterly", "monthly", "weekly"];

fn ts(t: NaiveDateTime) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// The span of the company's history.
struct Span {
    start: NaiveDateTime,
    end: NaiveDateTime,
    /// Signups fall in the first 82 % of the span, so the latest customers have some
    /// history: its length in days.
    signup_days: i64,
}

impl Span {
    fn of(world: &World) -> Self {
        let start = NaiveDate::from_ymd_opt(2023, 1, 1)
            .expect("valid")
            .and_hms_opt(0, 0, 0)
            .expect("valid");
        let days = i64::from(world.history_days.max(60));
        Span {
            start,
            end: start + Duration::days(days),
            signup_days: days * 82 / 100,
        }
    }
}

/// A product: id, category index, price.
type Product = (String, usize, f64);

/// Writes the company into `opts.out`.
pub fn generate(opts: &GenerateOptions) -> Result<Summary> {
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let out = &opts.out;
    std::fs::create_dir_all(out.join("truth")).map_err(|e| io(out, e))?;
    let world = opts.world;
    let span = Span::of(&world);
    let products = write_products(&mut rng, out)?;
    let mut persons: Vec<Person> = Vec::with_capacity(opts.customers);
    let mut numbers = SourceNumbers::default();
    for i in 0..opts.customers {
        let p = person(&mut rng, i, &persons, &world, &span, &mut numbers);
        persons.push(p);
    }
    let source_ids = write_profiles(out, &persons)?;
    let mut lives = Lives::create(out)?;
    for p in &persons {
        lives.live(&mut rng, p, &products, &world, &span)?;
    }
    let Lives {
        order_lines,
        events,
        surveys,
        consents,
        truth,
        planted_gaps,
        ..
    } = lives;
    truth.finish()?;
    planted_gaps.finish()?;
    let mut tables = Tables {
        orders: sorted_lines(order_lines),
        events: sorted_lines(events),
        surveys,
        consents,
    };
    let mut summary = Summary {
        persons: persons.len(),
        source_ids,
        ..Summary::default()
    };
    if opts.dirt && !tables.orders.is_empty() {
        summary.planted = tables.plant_dirt(&mut rng, (opts.customers / 2000).max(2));
    }
    tables.write(out, &mut summary)?;
    write_notes(out, &summary, &world)?;
    Ok(summary)
}

/// The catalogue: 30 products per category, and two new arrivals per category that
/// nobody has bought or viewed yet (only content can recommend them). Returns the 30s.
fn write_products(rng: &mut ChaCha8Rng, out: &Path) -> Result<Vec<Product>> {
    let mut products: Vec<Product> = Vec::new();
    let mut pf = Out::create(&out.join("products.csv"))?;
    // `colour` is a column the products table does not define: it is stored among the
    // product's attributes and used by content-based recommendations.
    pf.csv(&["product_id", "name", "category", "price", "brand", "colour"])?;
    const COLOURS: [&str; 5] = ["black", "white", "red", "green", "blue"];
    for (ci, cat) in CATEGORIES.iter().enumerate() {
        for k in 0..30 {
            let id = format!("P{:03}", ci * 30 + k);
            let price = (3.0 * (normal(rng) * 0.7 + 2.5).exp()).clamp(2.0, 400.0);
            let price = (price * 100.0).round() / 100.0;
            let name = format!("{} item {}, {}", cat, k + 1, ["classic", "deluxe", "mini", "pro"][k % 4]);
            pf.csv(&[
                &id,
                &name,
                cat,
                &format!("{price:.2}"),
                ["Acme", "Borealis", "Corvid", "Dune"][k % 4],
                COLOURS[(ci + 3 * k) % 5],
            ])?;
            products.push((id, ci, price));
        }
    }
    for (ci, cat) in CATEGORIES.iter().enumerate() {
        for k in 30..32 {
            pf.csv(&[
                &format!("N{:03}", ci * 2 + k - 30),
                &format!("{cat} new arrival {}", k - 29),
                cat,
                &format!("{:.2}", 20.0 + 5.0 * (k - 30) as f64),
                ["Acme", "Borealis"][k % 2],
                COLOURS[(ci + k) % 5],
            ])?;
        }
    }
    pf.finish()?;
    Ok(products)
}

/// The ids given so far in each system.
#[derive(Default)]
struct SourceNumbers {
    shop: usize,
    app: usize,
    crm: usize,
}

impl SourceNumbers {
    fn next(&mut self, s: Source) -> String {
        match s {
            Source::Shop => {
                self.shop += 1;
                format!("S{:06}", self.shop)
            }
            Source::App => {
                self.app += 1;
                format!("A{:06}", self.app)
            }
            Source::Crm => {
                self.crm += 1;
                format!("{}", 700_000 + self.crm)
            }
        }
    }
}

/// Person `i`: a name (1 % are decoys, sharing the name of an earlier person), records
/// in one to three systems, a purchase rate and dropout, tastes, awareness of features
/// and true satisfaction.
fn person(rng: &mut ChaCha8Rng, i: usize, persons: &[Person], world: &World, span: &Span, numbers: &mut SourceNumbers) -> Person {
    let (first, last, decoy_of) = name(rng, i, persons);
    let local: String = format!("{}.{}{}", first, last, i)
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
        .collect();
    let (records, primary) = records(rng, i, &local, numbers);
    let rate = (4.0 * (0.9 * normal(rng) - 0.4).exp()).clamp(0.2, 60.0);
    let (category, taste) = taste(rng, world.taste);
    let channel = match primary {
        Source::App => "app",
        Source::Crm => "store",
        Source::Shop => "web",
    };
    let aware = FEATURES
        .iter()
        .map(|f| {
            let p = if *f == "click_collect" && channel == "app" { 0.1 } else { 0.6 };
            rng.random_bool(p)
        })
        .collect();
    let satisfied = rng.random_bool(0.75);
    let dropout = dropout(rng, world, satisfied);
    Person {
        id: format!("P{:06}", i + 1),
        name: format!("{first} {last}"),
        birth: NaiveDate::from_ymd_opt(rng.random_range(1945..2005), rng.random_range(1..=12), rng.random_range(1..=28)).expect("valid"),
        gender: ["f", "m", "x"][rng.random_range(0..3)],
        signup: span.start + Duration::seconds(rng.random_range(0..span.signup_days * 86_400)),
        records,
        rate,
        dropout,
        category,
        taste,
        channel,
        aware,
        satisfied,
        satisfaction: if satisfied {
            rng.random_range(4..=5)
        } else {
            rng.random_range(1..=2)
        },
        decoy_of,
    }
}

/// A first and last name: drawn, or for 1 % of people after the first ten (decoys) the
/// name of an earlier person, whose id is returned too.
fn name(rng: &mut ChaCha8Rng, i: usize, persons: &[Person]) -> (String, String, Option<String>) {
    let decoy = i > 10 && rng.random_bool(0.01);
    let (first, last) = if decoy {
        let other: &Person = &persons[rng.random_range(0..persons.len())];
        let mut parts = other.name.splitn(2, ' ');
        (
            parts.next().unwrap_or("Ada").to_string(),
            parts.next().unwrap_or("Smith").to_string(),
        )
    } else {
        (
            FIRST.choose(rng).expect("non-empty").to_string(),
            LAST.choose(rng).expect("non-empty").to_string(),
        )
    };
    let decoy_of = decoy
        .then(|| persons.iter().find(|p| p.name == format!("{first} {last}")).map(|p| p.id.clone()))
        .flatten();
    (first, last, decoy_of)
}

/// The chance of leaving after each order; where leaving carries dissatisfaction, the
/// dissatisfied leave far sooner.
fn dropout(rng: &mut ChaCha8Rng, world: &World, satisfied: bool) -> f64 {
    let dropout: f64 = rng.random_range(0.02..0.35);
    match (world.satisfaction, satisfied) {
        (SatisfactionDriver::Dropout, false) => (dropout * 2.5).min(0.6),
        (SatisfactionDriver::Dropout, true) => dropout * 0.7,
        _ => dropout,
    }
}

/// The records of person `i` (email local part `local`) in their primary system and,
/// for a quarter, in one or two more; returns them with the primary system. The first
/// record has both keys; a later one links by email (in another spelling) or by phone
/// alone (with a work email).
fn records(rng: &mut ChaCha8Rng, i: usize, local: &str, numbers: &mut SourceNumbers) -> (Vec<Record>, Source) {
    let email = format!("{local}@{}", ["example.com", "mail.example.org", "post.example.net"][i % 3]);
    let phone = format!("7{:03}{:06}", 700 + (i / 1_000_000) % 300, i % 1_000_000);
    let city = CITIES.choose(rng).expect("non-empty").to_string();
    let primary = match rng.random_range(0..100) {
        0..55 => Source::Shop,
        55..85 => Source::App,
        _ => Source::Crm,
    };
    let mut sources = vec![primary];
    if rng.random_bool(0.25) {
        let others: Vec<Source> = [Source::Shop, Source::App, Source::Crm]
            .into_iter()
            .filter(|s| *s != primary)
            .collect();
        sources.push(*others.choose(rng).expect("two others"));
        if rng.random_bool(0.2) {
            if let Some(third) = [Source::Shop, Source::App, Source::Crm].into_iter().find(|s| !sources.contains(s)) {
                sources.push(third);
            }
        }
    }
    let mut records = Vec::new();
    for (k, s) in sources.iter().enumerate() {
        let id = numbers.next(*s);
        let by_phone = k > 0 && rng.random_bool(0.4);
        let (e, p) = if k == 0 {
            (Some(email.clone()), rng.random_bool(0.8).then(|| phone.clone()))
        } else if by_phone {
            (Some(format!("{local}@work.example.com")), Some(phone.clone()))
        } else {
            (Some(format!("  {}", email.to_uppercase())), None)
        };
        let city = if k > 0 && rng.random_bool(0.1) {
            CITIES.choose(rng).expect("non-empty").to_string()
        } else {
            city.clone()
        };
        records.push(Record {
            source: *s,
            id,
            email: e,
            phone: p,
            city,
        });
    }
    // A phone-only link needs the first record to carry the phone.
    if records
        .iter()
        .skip(1)
        .any(|r| r.email.as_deref().is_some_and(|e| e.contains("@work.")))
    {
        records[0].phone = Some(phone.clone());
    }
    (records, primary)
}

/// The favourite category and every category's share of purchases: one favourite with
/// 65 % and the rest spread, or shares drawn from a Dirichlet(0.7).
fn taste(rng: &mut ChaCha8Rng, taste: Taste) -> (usize, Vec<f64>) {
    let k = CATEGORIES.len();
    match taste {
        Taste::Concentrated => {
            let c = rng.random_range(0..k);
            let mut t = vec![0.35 / k as f64; k];
            t[c] += 0.65;
            (c, t)
        }
        Taste::Diffuse => {
            let g: Vec<f64> = (0..k).map(|_| crate::btyd::gamma(rng, 0.7, 1.0)).collect();
            let total: f64 = g.iter().sum();
            let t: Vec<f64> = g.iter().map(|x| x / total).collect();
            let c = (0..k).max_by(|&a, &b| t[a].total_cmp(&t[b])).expect("categories");
            (c, t)
        }
    }
}

/// The profiles, one file per system in its own format, and the truth of which record
/// is whose; returns the number of records.
fn write_profiles(out: &Path, persons: &[Person]) -> Result<usize> {
    let mut shop = Out::create(&out.join("customers_shop.csv"))?;
    shop.csv(&[
        "customer_id",
        "source",
        "email",
        "phone",
        "name",
        "birth_date",
        "gender",
        "city",
        "country",
        "signup_at",
    ])?;
    let mut crm = Out::create(&out.join("customers_crm.csv"))?;
    crm.csv(&[
        "customer_id",
        "source",
        "email",
        "phone",
        "name",
        "birth_date",
        "city",
        "country",
        "signup_at",
        "loyalty_card",
    ])?;
    let mut app = Out::create(&out.join("customers_app.jsonl"))?;
    let mut ids = Out::create(&out.join("truth/identities.csv"))?;
    ids.csv(&["source", "source_customer_id", "person_id"])?;
    let mut source_ids = 0;
    for p in persons {
        for r in &p.records {
            source_ids += 1;
            ids.csv(&[r.source.name(), &r.id, &p.id])?;
            let signup = ts(p.signup);
            let birth = p.birth.to_string();
            let email = r.email.clone().unwrap_or_default();
            match r.source {
                Source::Shop => {
                    let phone = r.phone.as_ref().map(|d| format!("+44 {} {}", &d[..4], &d[4..])).unwrap_or_default();
                    shop.csv(&[&r.id, "shop", &email, &phone, &p.name, &birth, p.gender, &r.city, "GB", &signup])?
                }
                Source::Crm => {
                    let phone = r.phone.as_ref().map(|d| format!("0{}-{}", &d[..4], &d[4..])).unwrap_or_default();
                    let card = format!("LC{}", &r.id[2..]);
                    crm.csv(&[&r.id, "crm", &email, &phone, &p.name, &birth, &r.city, "GB", &signup, &card])?
                }
                Source::App => {
                    let phone = r.phone.as_ref().map(|d| format!("+44{d}")).unwrap_or_default();
                    app.line(
                        &json!({"customer_id": r.id, "source": "app", "email": email, "phone": phone, "name": p.name,
                        "birth_date": birth, "gender": p.gender, "city": r.city, "signup_at": signup, "push_enabled": r.id.len() % 2 == 0})
                        .to_string(),
                    )?
                }
            }
        }
    }
    shop.finish()?;
    crm.finish()?;
    app.finish()?;
    ids.finish()?;
    Ok(source_ids)
}

impl Person {
    /// The (source, id) of the record the customer uses on `channel` (their first
    /// record when they have none in that system).
    fn sid_for(&self, channel: &str) -> (&'static str, &str) {
        let s = Source::for_channel(channel);
        let r = self.records.iter().find(|r| r.source == s).unwrap_or(&self.records[0]);
        (r.source.name(), r.id.as_str())
    }
}

/// How a customer's (dis)satisfaction shows: per order, complaints and support tickets
/// (Poisson means) and the chance that a line is returned.
fn service_rates(world: &World, satisfied: bool) -> (f64, f64, f64) {
    match (world.satisfaction == SatisfactionDriver::Service, satisfied) {
        (true, true) => (0.03, 0.08, 0.03),
        (true, false) => (0.40, 0.35, 0.15),
        (false, true) => (0.05, 0.10, 0.03),
        (false, false) => (0.08, 0.14, 0.05),
    }
}

/// What a survey respondent stated, and which statements are planted gaps.
#[derive(Default)]
struct Statements {
    frequency: String,
    frequency_gap: &'static str,
    categories: Vec<usize>,
    /// The category named in place of one of theirs, if any.
    category_gap: String,
    satisfaction: u32,
    satisfaction_gap: &'static str,
}

/// What every person does, as it is drawn: the rows of orders, events, surveys and
/// consents, and the truth files.
struct Lives {
    order_lines: Vec<(NaiveDateTime, String)>,
    events: Vec<(NaiveDateTime, String)>,
    surveys: Vec<String>,
    consents: Vec<String>,
    truth: Out,
    /// One row per planted gap: what was said that the behaviour contradicts.
    planted_gaps: Out,
    order_no: u64,
}

impl Lives {
    fn create(out: &Path) -> Result<Self> {
        let mut truth = Out::create(&out.join("truth/persons.csv"))?;
        truth.csv(&[
            "person_id",
            "rate_per_year",
            "dropout",
            "orders",
            "churned_at",
            "preferred_category",
            "channel",
            "stated_frequency",
            "actual_frequency",
            "frequency_gap",
            "stated_category",
            "category_gap",
            "satisfaction",
            "satisfaction_gap",
            "aware_click_collect",
            "decoy_of",
        ])?;
        let mut planted_gaps = Out::create(&out.join("truth/gaps.csv"))?;
        planted_gaps.csv(&["person_id", "gap_type", "subject", "direction"])?;
        Ok(Lives {
            order_lines: Vec::new(),
            events: Vec::new(),
            surveys: Vec::new(),
            consents: Vec::new(),
            truth,
            planted_gaps,
            order_no: 0,
        })
    }

    /// Person `p`'s purchases, interactions, survey answers (40 % answer) and consents,
    /// and their truth rows.
    fn live(&mut self, rng: &mut ChaCha8Rng, p: &Person, products: &[Product], world: &World, span: &Span) -> Result<()> {
        let (complaint_rate, ticket_rate, return_share) = service_rates(world, p.satisfied);
        let (n_orders, churned_at) = self.purchases(rng, p, products, world, span, return_share);
        let n_events = rng.random_range(2..8) + n_orders * 3;
        let n_complaints = poisson(rng, complaint_rate * n_orders as f64);
        let n_tickets = poisson(rng, ticket_rate * n_orders as f64);
        let last = churned_at.unwrap_or(span.end) + Duration::days(30);
        let window = (p.signup, last.min(span.end));
        self.interactions(rng, p, products, world, window, (n_events, n_complaints, n_tickets));
        let actual = frequency_class(p.rate);
        let mut said = Statements {
            satisfaction: p.satisfaction,
            ..Statements::default()
        };
        if rng.random_bool(0.4) {
            said = self.survey(rng, p, world, span, actual);
        }
        self.consents(rng, p);
        self.truth_rows(p, n_orders, churned_at, actual, &said)
    }

    /// Purchases: a Poisson process while alive, with a dropout chance after each
    /// order. Returns the number of orders and when the customer left, if they did.
    fn purchases(
        &mut self,
        rng: &mut ChaCha8Rng,
        p: &Person,
        products: &[Product],
        world: &World,
        span: &Span,
        return_share: f64,
    ) -> (usize, Option<NaiveDateTime>) {
        let mut t = p.signup;
        let mut n_orders = 0;
        loop {
            self.order_no += 1;
            n_orders += 1;
            let channel = if rng.random_bool(0.75) {
                p.channel
            } else {
                CHANNELS.choose(rng).expect("non-empty")
            };
            let (src, sid) = p.sid_for(channel);
            let lines = rng.random_range(1..=3);
            let mut chosen = HashSet::new();
            for _ in 0..lines {
                let cat = match world.taste {
                    Taste::Concentrated => {
                        if rng.random_bool(0.65) {
                            p.category
                        } else {
                            rng.random_range(0..CATEGORIES.len())
                        }
                    }
                    Taste::Diffuse => pick(rng, &p.taste),
                };
                let k = rng.random_range(0..30);
                let (pid, _, price) = &products[cat * 30 + k];
                if !chosen.insert(pid.clone()) {
                    continue;
                }
                let returned = rng.random_bool(return_share);
                let q: i32 = rng.random_range(1..=3);
                let (q, status) = if returned { (-q, "returned") } else { (q, "completed") };
                self.order_lines.push((
                    t,
                    format!(
                        "O{:08},{sid},{src},{},{pid},{q},{price:.2},{channel},{status}",
                        self.order_no,
                        ts(t)
                    ),
                ));
            }
            if rng.random_bool(p.dropout) {
                return (n_orders, Some(t));
            }
            t += Duration::seconds((exp(rng, p.rate / 365.0) * 86_400.0) as i64 + 60);
            if t >= span.end {
                return (n_orders, None);
            }
        }
    }

    /// Interactions between signup and the end of `window`: browsing and the like, then
    /// complaints and tickets (`counts`: the three numbers).
    fn interactions(
        &mut self,
        rng: &mut ChaCha8Rng,
        p: &Person,
        products: &[Product],
        world: &World,
        window: (NaiveDateTime, NaiveDateTime),
        (n_events, n_complaints, n_tickets): (usize, usize, usize),
    ) {
        let span = (window.1 - window.0).num_seconds().max(3600);
        for e in 0..n_events + n_complaints + n_tickets {
            let at = p.signup + Duration::seconds(rng.random_range(0..span) / 60 * 60 + e as i64);
            let (src, sid) = p.sid_for(p.channel);
            let kind = if e >= n_events + n_complaints {
                "support_ticket"
            } else if e >= n_events {
                "complaint"
            } else {
                [
                    "view",
                    "view",
                    "view",
                    "search",
                    "add_to_cart",
                    "email_open",
                    "email_click",
                    "app_open",
                    "review",
                    "referral",
                    "feature_use",
                    "query",
                ][rng.random_range(0..12)]
            };
            let mut ev = json!({"customer_id": sid, "source": src, "occurred_at": ts(at), "event_type": kind, "channel": p.channel});
            event_details(rng, p, products, world, kind, &mut ev);
            self.events.push((at, ev.to_string()));
        }
    }

    /// The survey answers of `p`, some misstating what they do (`actual`: their true
    /// frequency class).
    fn survey(&mut self, rng: &mut ChaCha8Rng, p: &Person, world: &World, span: &Span, actual: &str) -> Statements {
        let (src, sid) = p.sid_for(p.channel);
        // Answered after signing up, and before the export (no answers from the future).
        let at = ts((p.signup + Duration::days(rng.random_range(10..200))).min(span.end - Duration::hours(1)));
        let (frequency, frequency_gap) = stated_frequency(rng, world, actual);
        let (categories, category_gap) = stated_categories(rng, p, world);
        let (satisfaction, satisfaction_gap) = stated_satisfaction(rng, p, world);
        let nps = (satisfaction * 2).min(10).to_string();
        let aware = if p.aware[0] { "yes" } else { "no" };
        for &c in &categories {
            self.surveys.push(format!("{sid},{src},{at},preferred_category,{}", CATEGORIES[c]));
        }
        for (q, a) in [
            ("purchase_frequency", frequency.as_str()),
            ("satisfaction", &satisfaction.to_string()),
            ("nps", &nps),
            ("will_repurchase", if satisfaction >= 4 { "yes" } else { "no" }),
            ("aware:click_collect", aware),
            ("preferred_channel", p.channel),
        ] {
            self.surveys.push(format!("{sid},{src},{at},{q},{a}"));
        }
        Statements {
            frequency,
            frequency_gap,
            categories,
            category_gap,
            satisfaction,
            satisfaction_gap,
        }
    }

    /// Consents, recorded at signup; a few later withdraw marketing.
    fn consents(&mut self, rng: &mut ChaCha8Rng, p: &Person) {
        let home = &p.records[0];
        let (src, sid) = (home.source.name(), home.id.as_str());
        for (purpose, pr) in [("marketing", 0.8), ("email", 0.7), ("sms", 0.35), ("profiling", 0.85)] {
            let granted = rng.random_bool(pr);
            self.consents.push(format!("{sid},{src},{purpose},{granted},{}", ts(p.signup)));
            if purpose == "marketing" && granted && rng.random_bool(0.05) {
                self.consents.push(format!(
                    "{sid},{src},{purpose},false,{}",
                    ts(p.signup + Duration::days(rng.random_range(30..400)))
                ));
            }
        }
    }

    /// The planted gaps of `p` and their row of truth/persons.csv.
    fn truth_rows(
        &mut self,
        p: &Person,
        n_orders: usize,
        churned_at: Option<NaiveDateTime>,
        actual: &str,
        said: &Statements,
    ) -> Result<()> {
        let cat_gap = said.category_gap.as_str();
        for (kind, subject, dir) in [
            ("frequency", "purchase_frequency", said.frequency_gap),
            ("category", cat_gap, if cat_gap.is_empty() { "" } else { "over" }),
            ("satisfaction", "satisfaction", said.satisfaction_gap),
        ] {
            if !dir.is_empty() {
                self.planted_gaps.csv(&[&p.id, kind, subject, dir])?;
            }
        }
        self.truth.line(
            &[
                p.id.clone(),
                format!("{:.4}", p.rate),
                format!("{:.4}", p.dropout),
                n_orders.to_string(),
                churned_at.map(ts).unwrap_or_default(),
                CATEGORIES[p.category].into(),
                p.channel.into(),
                said.frequency.clone(),
                actual.into(),
                said.frequency_gap.into(),
                said.categories.iter().map(|&c| CATEGORIES[c]).collect::<Vec<_>>().join(";"),
                if cat_gap.is_empty() { String::new() } else { "over".into() },
                said.satisfaction.to_string(),
                said.satisfaction_gap.into(),
                p.aware[0].to_string(),
                p.decoy_of.clone().unwrap_or_default(),
            ]
            .iter()
            .map(|s| csv_field(s))
            .collect::<Vec<_>>()
            .join(","),
        )
    }
}

/// The product, category, rating or subject an event of `kind` carries.
fn event_details(rng: &mut ChaCha8Rng, p: &Person, products: &[Product], world: &World, kind: &str, ev: &mut serde_json::Value) {
    match kind {
        "view" | "add_to_cart" | "review" => {
            let (pid, cat, _) = &products[rng.random_range(0..products.len())];
            ev["product_id"] = json!(pid);
            ev["category"] = json!(CATEGORIES[*cat]);
            if kind == "review" {
                // Reviews follow the true satisfaction where service carries it.
                let service = world.satisfaction == SatisfactionDriver::Service;
                let stars: u32 = match (service, p.satisfied) {
                    (true, true) => rng.random_range(4..=5),
                    (true, false) => rng.random_range(1..=3),
                    (false, true) => rng.random_range(3..=5),
                    (false, false) => rng.random_range(2..=5),
                };
                ev["value"] = json!(stars);
            }
        }
        "feature_use" => {
            let known: Vec<usize> = (0..FEATURES.len()).filter(|f| p.aware[*f]).collect();
            match known.choose(rng) {
                Some(f) => ev["subject"] = json!(FEATURES[*f]),
                None => ev["event_type"] = json!("app_open"),
            }
        }
        "support_ticket" | "complaint" | "query" => {
            ev["subject"] = json!(["delivery", "refund", "payment", "click_collect"][rng.random_range(0..4)]);
            let priority = ["low", "high"][rng.random_range(0..2)];
            ev["properties"] = json!({ "priority": priority });
        }
        _ => {}
    }
}

/// The stated purchase frequency: the true class, or for a misreport one at least two
/// classes away (above, or where under-statement is planted, below); and the gap.
fn stated_frequency(rng: &mut ChaCha8Rng, world: &World, actual: &str) -> (String, &'static str) {
    let ai = FREQUENCIES.iter().position(|f| *f == actual).expect("known class");
    let mut stated = actual.to_string();
    let mut gap = "";
    if rng.random_bool(1.0 - world.honesty) {
        let over: Vec<usize> = (ai + 2..FREQUENCIES.len()).collect();
        let under: Vec<usize> = if world.misreports == Misreports::Both {
            (0..ai.saturating_sub(1)).collect()
        } else {
            Vec::new()
        };
        let go_over = !over.is_empty() && (under.is_empty() || rng.random_bool(0.5));
        if go_over {
            stated = FREQUENCIES[*over.choose(rng).expect("non-empty")].to_string();
            gap = "over";
        } else if let Some(&u) = under.choose(rng) {
            stated = FREQUENCIES[u].to_string();
            gap = "under";
        }
    }
    (stated, gap)
}

/// The stated favourite categories: honest respondents name the top one, or with
/// multi-category answers up to three, only ones bought at least 60 % as much as the
/// favourite; a misreport names a category the customer almost never buys (under 30 %
/// of the favourite's share) in place of one of theirs — returned as the gap.
fn stated_categories(rng: &mut ChaCha8Rng, p: &Person, world: &World) -> (Vec<usize>, String) {
    let mut order: Vec<usize> = (0..CATEGORIES.len()).collect();
    order.sort_by(|&a, &b| p.taste[b].total_cmp(&p.taste[a]).then(a.cmp(&b)));
    let named = if world.multi_category { rng.random_range(1..=3) } else { 1 };
    let top = p.taste[order[0]];
    let mut stated: Vec<usize> = order
        .iter()
        .copied()
        .take(named)
        .filter(|&j| j == order[0] || p.taste[j] >= 0.6 * top)
        .collect();
    let mut gap = String::new();
    if rng.random_bool(1.0 - world.honesty) {
        let rare: Vec<usize> = order.iter().copied().filter(|&j| p.taste[j] < 0.3 * top).collect();
        if let Some(&c) = rare.choose(rng) {
            let slot = rng.random_range(0..stated.len());
            stated[slot] = c;
            gap = CATEGORIES[c].to_string();
        }
    }
    (stated, gap)
}

/// The stated satisfaction score: honest respondents state their true score (a few say
/// 3, neutral); a misreport states the opposite — satisfied while not (over), or
/// dissatisfied while satisfied (under, where under-statement is planted).
fn stated_satisfaction(rng: &mut ChaCha8Rng, p: &Person, world: &World) -> (u32, &'static str) {
    if rng.random_bool(1.0 - world.honesty) {
        if !p.satisfied {
            return (rng.random_range(4..=5), "over");
        } else if world.misreports == Misreports::Both {
            return (rng.random_range(1..=2), "under");
        }
        return (p.satisfaction, "");
    }
    if rng.random_bool(0.1) {
        return (3, "");
    }
    (p.satisfaction, "")
}

/// Lines sorted by time (then text), without the time.
fn sorted_lines(mut lines: Vec<(NaiveDateTime, String)>) -> Vec<String> {
    lines.sort();
    lines.into_iter().map(|(_, l)| l).collect()
}

/// The activity tables' lines as they will be written.
struct Tables {
    orders: Vec<String>,
    events: Vec<String>,
    surveys: Vec<String>,
    consents: Vec<String>,
}

impl Tables {
    /// Plants `per_kind` rows of each kind of dirt in orders, events and surveys.
    fn plant_dirt(&mut self, rng: &mut ChaCha8Rng, per_kind: usize) -> BTreeMap<String, Planted> {
        let mut planted = BTreeMap::new();
        planted.insert("orders".into(), dirt::orders(rng, &mut self.orders, per_kind));
        planted.insert("events".into(), dirt::events(rng, &mut self.events, per_kind));
        if !self.surveys.is_empty() {
            planted.insert("surveys".into(), dirt::surveys(rng, &mut self.surveys, per_kind));
        }
        planted
    }

    fn write(&self, out: &Path, summary: &mut Summary) -> Result<()> {
        write_lines(
            &out.join("orders.csv"),
            "order_id,customer_id,source,ordered_at,product_id,quantity,unit_price,channel,status",
            &self.orders,
        )?;
        write_lines(&out.join("events.jsonl"), "", &self.events)?;
        write_lines(
            &out.join("surveys.csv"),
            "customer_id,source,answered_at,question,answer",
            &self.surveys,
        )?;
        write_lines(
            &out.join("consents.csv"),
            "customer_id,source,purpose,granted,recorded_at",
            &self.consents,
        )?;
        summary.order_lines = self.orders.len();
        summary.events = self.events.len();
        summary.survey_answers = self.surveys.len();
        Ok(())
    }
}

/// rapport.toml, and the truth's dirt.json, README.md and world.json.
fn write_notes(out: &Path, summary: &Summary, world: &World) -> Result<()> {
    std::fs::write(
        out.join("rapport.toml"),
        "# A generated company: the files use canonical names, so only identity needs a setting.\n[identity]\ndefault_country_code = \"44\"\n",
    )
    .map_err(|e| io(out, e))?;
    std::fs::write(
        out.join("truth/dirt.json"),
        serde_json::to_string_pretty(&summary.planted).expect("serialises"),
    )
    .map_err(|e| io(out, e))?;
    std::fs::write(out.join("truth/README.md"), TRUTH_README).map_err(|e| io(out, e))?;
    std::fs::write(
        out.join("truth/world.json"),
        serde_json::to_string_pretty(world).expect("serialises"),
    )
    .map_err(|e| io(out, e))
}

fn write_lines(path: &Path, header: &str, lines: &[String]) -> Result<()> {
    let mut o = Out::create(path)?;
    if !header.is_empty() {
        o.line(header)?;
    }
    for l in lines {
        o.line(l)?;
    }
    o.finish()
}

const TRUTH_README: &str = "# What Rapport should find in this generated company

- `identities.csv`: every source id and the person it belongs to. Source ids of one
  person share an email (spelt differently) or a phone (formatted differently). People
  with the same name and different email and phone are different people (`decoy_of`
  in persons.csv names the earlier namesake).
- `dirt.json`: per table, the bad rows planted, by the quarantine reason they should
  get, and the exact duplicate rows planted.
- `persons.csv`: each person's latent behaviour (purchase rate per year, dropout chance
  after each purchase, most bought category and channel), what they said in the survey
  (`stated_category`: the categories named, separated by `;`) and which statements were
  planted as gaps (`over`: says more than does; for satisfaction, says satisfied while
  not), and `satisfaction`, the stated score (the true one unless it is a gap).
- `gaps.csv`: one row per planted gap (person, gap type, subject — the misstated
  category for a category gap —, direction). A satisfaction gap is a stated score on
  the wrong side of the person's true state: 4–5 while dissatisfied (`over`), 1–2
  while satisfied (`under`).
- `world.json`: the generator's switches (taste spread, multi-category answers, honesty,
  which directions are planted, what satisfaction shows in — service signals or
  dropout —, history length).
";
