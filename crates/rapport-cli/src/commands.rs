//! One function per command: turn what the user typed into calls to the engine and
//! print what happened.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use rapport_engine::export::{self, OutFormat};
use rapport_engine::results::{
    ClusterReport, ClvFit, Fit, GapEvaluation, HoldoutReport, ModelsReport, Recommendation, Record, RecsEvaluation, TypeReliability,
    UpliftReport,
};
use rapport_engine::session::{Personal, Session};
use rapport_engine::EngineError;
use rapport_store::{IngestOptions, IngestOutcome, StoreError, Workspace, Writer};

use crate::progress::Bars;

/// The exit status for an error: 75 (EX_TEMPFAIL) when another command holds the
/// workspace, 2 for a problem the user can fix, 1 for anything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    let locked = matches!(e.downcast_ref::<StoreError>(), Some(StoreError::Locked(_)))
        || matches!(e.downcast_ref::<EngineError>(), Some(e) if matches!(e.store(), Some(StoreError::Locked(_))));
    if locked {
        75
    } else if is_user_error(e) {
        2
    } else {
        1
    }
}

fn is_user_error(e: &anyhow::Error) -> bool {
    if let Some(e) = e.downcast_ref::<EngineError>() {
        return e.is_user_error();
    }
    if let Some(e) = e.downcast_ref::<StoreError>() {
        return e.is_user_error();
    }
    e.downcast_ref::<UserError>().is_some()
}

/// A mistake in how the command was called.
#[derive(Debug)]
pub struct UserError(pub String);

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UserError {}

/// Opens the workspace for a command that changes it: waits up to `wait` for another
/// writer, then fails naming it.
fn writer(workspace: &Path, command: &str, wait: Duration, create: bool) -> Result<Workspace> {
    let who = Writer::new(&format!("rapport {command}")).waiting(wait);
    Ok(if create {
        Workspace::writer(workspace, &who)?
    } else {
        Workspace::existing_writer(workspace, &who)?
    })
}

pub fn init(workspace: &Path, data: Option<&Path>, force: bool, wait: Duration) -> Result<()> {
    let dir = data.unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(UserError(format!("{} is not a folder", dir.display())).into());
    }
    let config = dir.join("rapport.toml");
    if config.exists() && !force {
        return Err(UserError(format!("{} exists; use --force to overwrite it", config.display())).into());
    }
    std::fs::write(&config, rapport_store::config::TEMPLATE).with_context(|| format!("writing {}", config.display()))?;
    let ws = writer(workspace, "init", wait, true)?;
    ws.keys(true)?;
    println!("wrote {}", config.display());
    println!("workspace {} is ready (key: {})", workspace.display(), key_source(&ws));
    Ok(())
}

fn key_source(ws: &Workspace) -> String {
    if std::env::var(rapport_store::crypto::KEY_ENV).is_ok() {
        format!("from {}", rapport_store::crypto::KEY_ENV)
    } else {
        ws.key_file().display().to_string()
    }
}

pub fn ingest(workspace: &Path, data: &Path, config: Option<&Path>, engine: &EngineArgs, quiet: bool, wait: Duration) -> Result<()> {
    // The [engine] section of the config the ingest reads (DATA/rapport.toml by default).
    let (_, engine_config) = rapport_store::Config::for_data(data, config)?;
    let engine = engine.engine(engine_config.as_deref())?;
    let existed = workspace.exists();
    let ws = writer(workspace, "ingest", wait, true)?;
    let mut opts = IngestOptions::new(data);
    opts.config_file = config.map(Path::to_path_buf);
    match rapport_engine::ingest::ingest_on(&ws, &opts, &Bars::new(quiet), &engine) {
        Ok(outcome) => {
            print_ingest(&ws, &outcome);
            Ok(())
        }
        Err(e) => {
            // A first ingest that fails leaves no half-made workspace behind.
            drop(ws);
            if !existed {
                let _ = std::fs::remove_dir_all(workspace);
            }
            Err(e.into())
        }
    }
}

pub fn print_ingest(ws: &Workspace, outcome: &IngestOutcome) {
    let q = &outcome.quality;
    if outcome.nothing_new {
        println!(
            "nothing new: every file in {} was ingested before; the workspace is unchanged",
            q.data_dir
        );
        return;
    }
    println!(
        "{:<18} {:>10} {:>10} {:>11} {:>10}",
        "table", "read", "accepted", "quarantined", "duplicates"
    );
    for (t, tq) in &q.tables {
        println!(
            "{:<18} {:>10} {:>10} {:>11} {:>10}",
            t,
            tq.rows_read,
            tq.rows_accepted,
            tq.rejected_total(),
            tq.duplicates_removed
        );
    }
    for (t, tq) in &q.tables {
        for (reason, n) in &tq.rejected {
            println!("  quarantined {t}: {reason}: {n}");
        }
    }
    for (t, tq) in &q.tables {
        for (column, n) in &tq.personal_values_sealed {
            println!("  personal values stored encrypted in {t}.{column}: {n}");
        }
    }
    let id = &q.identity;
    println!(
        "identity: {} source ids → {} unified customers (merged by email {}, by phone {})",
        id.source_ids, id.unified_customers, id.merged_by_email, id.merged_by_phone
    );
    for s in &q.skipped_files {
        println!("skipped {} ({}): same content as {}", s.file, s.table, s.same_as);
    }
    let reports = ws.reports_dir();
    println!("quality: {}", reports.join("quality.json").display());
    println!("report:  {}", reports.join("report.html").display());
}

fn models_config(config: Option<&Path>) -> Result<rapport_engine::config::ModelsConfig> {
    let models = match config {
        Some(p) => rapport_store::Config::load(p)?.models,
        None => None,
    };
    Ok(rapport_engine::config::ModelsConfig::from_table(models.as_ref())?)
}

fn actions_config(config: Option<&Path>) -> Result<rapport_engine::run::actions::ActionsConfig> {
    let actions = match config {
        Some(p) => rapport_store::Config::load(p)?.actions,
        None => None,
    };
    Ok(rapport_engine::run::actions::ActionsConfig::from_table(actions.as_ref())?)
}

pub fn train(data: &Path, target: &str, id: Option<&str>, folds: usize, seed: u64, as_json: bool) -> Result<()> {
    let v = rapport_engine::train::train(data, target, id, folds, seed)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} rows ({} positive), {} features, {}-fold cross-validation",
        v.rows, v.positives, v.features, v.folds
    );
    for (name, m) in &v.models {
        println!("  {name:<9} AUC {:.4} ± {:.4}", m.auc_mean, m.auc_sd);
    }
    for (name, why) in &v.dropped_columns {
        println!("  column {name} not used: {why}");
    }
    println!("best: {} (AUC {:.4})", v.model, v.auc_mean);
    Ok(())
}

/// The table of `rapport evaluate gaps`.
fn print_gap_reliability(v: &GapEvaluation) {
    println!(
        "gap evidence as of {} against the same statements judged with the data to {} ({} days later)",
        v.calibration_end, v.holdout_end, v.holdout_days
    );
    println!("a calibrated evidence is borne out on average: in each bin the two means agree");
    println!(
        "{:<13} {:>11} {:>10} {:>12} {:>14}",
        "gap", "evidence", "statements", "at cut-off", "with later data"
    );
    for (t, g) in &v.gaps {
        let TypeReliability::Checked(g) = g else { continue };
        for b in &g.bins {
            println!(
                "{t:<13} {:>5.2}–{:<5.2} {:>10} {:>12.3} {:>14.3}",
                b.from, b.to, b.statements, b.evidence_at_cutoff, b.evidence_with_later_data
            );
        }
        println!(
            "{t:<13} mean |gap| {:.3}; reported at the cut-off {}, still reported {} (mean later evidence {:.3})",
            g.mean_abs_gap,
            g.reported_at_cutoff,
            g.still_reported,
            g.mean_later_evidence_of_reported.unwrap_or(f64::NAN)
        );
    }
}

/// The tables of `rapport evaluate recs`.
fn print_recs_evaluation(v: &RecsEvaluation) {
    let k = v.k;
    println!(
        "split {}: {} customers bought before and after, {} products; models fitted in {:.2} s",
        v.split, v.customers_evaluated, v.items, v.fit_seconds
    );
    println!(
        "{:<15} {:>12} {:>10} {:>8} {:>9}",
        "model",
        format!("precision@{k}"),
        format!("recall@{k}"),
        format!("ndcg@{k}"),
        "coverage"
    );
    let w = v.weights;
    println!(
        "blend weights (chosen on the {} days before the split): item_knn {:?} als {:?} co_purchase {:?} content {:?}",
        rapport_engine::recs::VALIDATION_DAYS,
        w.item_knn,
        w.als,
        w.co_purchase,
        w.content
    );
    for (name, m) in &v.models {
        println!(
            "{name:<15} {:>12.4} {:>10.4} {:>8.4} {:>9.4}",
            m.precision_at_k, m.recall_at_k, m.ndcg_at_k, m.coverage
        );
    }
}

/// The calibration/holdout tables of `rapport evaluate --holdout-days N`.
fn print_holdout(v: &HoldoutReport) {
    println!(
        "calibration to {}, holdout to {} ({} days, {} customers)",
        v.calibration_end, v.holdout_end, v.holdout_days, v.customers
    );
    println!(
        "repeat purchases in the holdout: actual {:.0}, BG/NBD {:.1}, Pareto/NBD {:.1}",
        v.holdout_actual, v.holdout_forecast.bgnbd, v.holdout_forecast.pareto_nbd
    );
    println!("{:>4} {:>9} {:>8} {:>8} {:>10}", "x", "customers", "actual", "BG/NBD", "Pareto/NBD");
    for b in &v.by_calibration_frequency {
        println!(
            "{:>4} {:>9} {:>8.4} {:>8.4} {:>10.4}",
            b.x, b.customers, b.actual, b.bgnbd, b.pareto_nbd
        );
    }
    match (&v.churn.check, &v.churn.message) {
        (Some(c), _) => println!(
            "churn ({} days after the cut-off, {} buyers, {:.1} % churned): {} AUC {:.3}, precision {:.3}, recall {:.3}, Brier {:.3}",
            c.window_days,
            c.customers,
            100.0 * c.churn_rate,
            c.model,
            c.auc.unwrap_or(f64::NAN),
            c.precision,
            c.recall,
            c.brier
        ),
        (None, Some(m)) => println!("churn: not evaluated ({m})"),
        (None, None) => {}
    }
}

pub fn evaluate(
    workspace: &Path,
    what: &str,
    holdout_days: Option<u32>,
    split_date: Option<&str>,
    k: usize,
    config: Option<&Path>,
    as_json: bool,
) -> Result<()> {
    let ws = Workspace::reader(workspace)?;
    let cfg = models_config(config)?;
    match what {
        "recs" => {
            let session = Session::new(&ws);
            let split = rapport_engine::recs::split_day(&session, split_date, holdout_days)?;
            let v = rapport_engine::recs::evaluate(&session, split, k, &cfg)?;
            print_or_json(&v, as_json, print_recs_evaluation)
        }
        "gaps" => {
            let v = rapport_engine::evaluate::evaluate_gaps(&ws, &cfg, holdout_days.unwrap_or(180))?;
            print_or_json(&v, as_json, print_gap_reliability)
        }
        _ => {
            let Some(holdout_days) = holdout_days else {
                bail!(UserError("evaluate needs --holdout-days N".into()));
            };
            let v = rapport_engine::evaluate::evaluate(&ws, &cfg, holdout_days)?;
            print_or_json(&v, as_json, print_holdout)
        }
    }
}

/// `--json`: the result as JSON; else the lines a person reads.
fn print_or_json<T: serde::Serialize>(v: &T, as_json: bool, print: fn(&T)) -> Result<()> {
    if as_json {
        println!("{}", serde_json::to_string_pretty(v)?);
    } else {
        print(v);
    }
    Ok(())
}

/// One line for a fitted CLV model: its parameters, log-likelihood (BG/NBD and
/// Pareto/NBD) and convergence; nothing for a model that did not fit.
fn print_fit<P>(label: &str, fit: Option<&ClvFit<P>>, params: impl Fn(&P) -> Vec<(&'static str, f64)>) {
    let Some((fit, p)) = fit.and_then(|f| Some((f, f.params()?))) else {
        return;
    };
    let mut line = format!("{label:<12}");
    for (name, v) in params(p) {
        line.push_str(&format!(" {name} {v:.4} "));
    }
    // Gamma-Gamma's likelihood is over spend, not comparable with the others'.
    if let (Some(ll), Some(_)) = (fit.log_likelihood, fit.groups) {
        line.push_str(&format!(" LL {ll:.2} "));
    }
    println!("{line} converged {}", fit.converged);
}

/// Where the queries run: `--engine` and `--memory-limit` (or their environment
/// variables) over `[engine]` of the config file.
pub struct EngineArgs {
    pub url: Option<String>,
    pub memory_limit: Option<String>,
}

impl EngineArgs {
    fn engine(&self, config: Option<&Path>) -> Result<std::sync::Arc<rapport_engine::exec::Engine>> {
        let section = match config {
            Some(p) => rapport_store::Config::load(p)?.engine,
            None => Default::default(),
        };
        Ok(std::sync::Arc::new(rapport_engine::exec::Engine::new(
            &section,
            self.url.as_deref(),
            self.memory_limit()?,
        )?))
    }

    /// `--memory-limit` in bytes, if given.
    fn memory_limit(&self) -> Result<Option<u64>> {
        match &self.memory_limit {
            Some(t) => Ok(Some(
                rapport_store::config::parse_size(t).map_err(|m| UserError(format!("--memory-limit {m}")))?,
            )),
            None => Ok(None),
        }
    }
}

pub fn run(workspace: &Path, as_of: Option<&str>, config: Option<&Path>, engine: &EngineArgs, wait: Duration) -> Result<()> {
    let ws = writer(workspace, "run", wait, false)?;
    let session = rapport_engine::session::Session::with_engine(&ws, engine.engine(config)?);
    run_in(&session, as_of, config)
}

fn run_in(session: &rapport_engine::session::Session<'_>, as_of: Option<&str>, config: Option<&Path>) -> Result<()> {
    let cfg = models_config(config)?;
    let policy = actions_config(config)?;
    let s = rapport_engine::run::run_on(session, &cfg, &policy, as_of)?;
    println!(
        "as of {}: {} customers, {} with purchases modelled",
        s.as_of, s.customers, s.modelled
    );
    let m = &s.models;
    print_fit("BG/NBD", m.bgnbd.as_ref(), |p| {
        vec![("r", p.r), ("alpha", p.alpha), ("a", p.a), ("b", p.b)]
    });
    print_fit("Pareto/NBD", m.pareto_nbd.as_ref(), |p| {
        vec![("r", p.r), ("alpha", p.alpha), ("s", p.s), ("beta", p.beta)]
    });
    print_fit("Gamma-Gamma", Some(&m.gamma_gamma), |p| {
        vec![("p", p.p), ("q", p.q), ("gamma", p.gamma)]
    });
    match &m.kmeans {
        Some(ClusterReport::Dbscan(k)) => println!("DBSCAN       {} clusters, noise {:.1} %", k.k, 100.0 * k.noise_share),
        Some(ClusterReport::Kmeans(k)) => println!(
            "k-means      k {} (at least {}; {})  silhouette {:.3}",
            k.k, k.k_min, k.criterion, k.silhouette
        ),
        None => {}
    }
    print_predictions(m);
    let where_ = session.engine().cluster_url().unwrap_or("this process");
    let stages: Vec<String> = s.stages.iter().map(|c| format!("{} {:.1} s", c.stage, c.seconds)).collect();
    println!("stages       {} (queries in {where_})", stages.join(", "));
    println!("models: {}", session.workspace().reports_dir().join("models.json").display());
    Ok(())
}

/// Churn, loyalty, behaviour and gap figures of a run, one line each.
fn print_predictions(m: &ModelsReport) {
    match &m.churn {
        Fit::Fitted(c) => println!(
            "churn        {} validation AUC {:.3} ({}-day window)",
            c.model, c.auc, c.horizon_days
        ),
        Fit::Skipped(s) => println!("churn        not fitted: {}", s.message),
    }
    if let Fit::Fitted(l) = &m.loyalty {
        println!("loyalty      R² {:.3}  MSE {:.4}", l.r2, l.mse);
    }
    if let Fit::Fitted(b) = &m.behaviour {
        println!(
            "behaviour    log-loss {:.3} (class frequencies {:.3})",
            b.log_loss, b.baseline_log_loss
        );
    }
    let counts: Vec<String> = m.gaps.gaps.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "gaps         {}",
        if counts.is_empty() {
            "none found".to_string()
        } else {
            counts.join(", ")
        }
    );
    for (what, why) in &m.gaps.not_computed {
        println!("  not computed — {what}: {why}");
    }
    let a = &m.actions;
    let per: Vec<String> = a
        .rules
        .iter()
        .filter(|r| r.treatment + r.control > 0)
        .map(|r| format!("{} {}+{}", r.action, r.treatment, r.control))
        .collect();
    println!(
        "actions      campaign {}: {} (treatment+control); {} customers without marketing consent get no marketing action",
        a.campaign_id,
        if per.is_empty() { "none".to_string() } else { per.join(", ") },
        a.customers_without_marketing_consent
    );
    print_uplift(&m.uplift);
}

fn print_uplift(rows: &[UpliftReport]) {
    let pts = |v: Option<f64>| 100.0 * v.unwrap_or(f64::NAN);
    for r in rows {
        println!(
            "uplift       {} {}: {:+.1} points [{:+.1}, {:+.1}] ({} treated, {} control) — {}",
            r.campaign_id,
            r.action,
            pts(r.uplift),
            pts(r.ci_low),
            pts(r.ci_high),
            r.treated,
            r.control,
            r.verdict
        );
    }
}

/// Reads `P1,P2:3` into (product, quantity) pairs; a product without a quantity counts
/// once. Whether a quantity is positive is the engine's rule ([`rapport_engine::recs::fold_in`]).
fn parse_basket(text: &str) -> Result<Vec<(String, f64)>> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (p, q) = match item.rsplit_once(':') {
            Some((p, q)) => {
                let q: f64 = q
                    .trim()
                    .parse()
                    .map_err(|_| UserError(format!("--products: quantity {q:?} of {p:?} is not a number")))?;
                (p.trim().to_string(), q)
            }
            None => (item.to_string(), 1.0),
        };
        out.push((p, q));
    }
    if out.is_empty() {
        return Err(UserError("--products: give at least one product id, e.g. --products P1,P2:3".into()).into());
    }
    Ok(out)
}

pub fn recommend(workspace: &Path, products: &str, k: usize, as_json: bool) -> Result<()> {
    let basket = parse_basket(products)?;
    let ws = Workspace::reader(workspace)?;
    let recs = rapport_engine::recs::fold_in(&ws, &basket, k)?;
    if as_json {
        let v: Vec<Recommendation> = recs
            .iter()
            .enumerate()
            .map(|(r, (p, s))| Recommendation {
                rank: r + 1,
                product_id: p.clone(),
                score: *s,
                reason: "als (fold-in)".into(),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (r, (p, s)) in recs.iter().enumerate() {
            println!("{:>3}  {p:<20} {s:.4}", r + 1);
        }
    }
    Ok(())
}

/// Renders the report again from the tables and models.json.
pub fn report(workspace: &Path, wait: Duration) -> Result<()> {
    let ws = writer(workspace, "report", wait, false)?;
    let models = rapport_engine::report::read_models(&ws)?;
    if models.is_none() {
        eprintln!("note: no reports/models.json yet (run `rapport run`): the report shows the data only");
    }
    let path = rapport_engine::report::write_report(&ws, models.as_ref())?;
    println!("report: {}", path.display());
    Ok(())
}

/// Recomputes the `uplift` table from the ingested campaign outcomes.
pub fn uplift(workspace: &Path, as_json: bool, wait: Duration) -> Result<()> {
    let ws = writer(workspace, "uplift", wait, false)?;
    let rows = rapport_engine::uplift::refresh(&ws)?;
    let v = rapport_engine::uplift::report(&rows);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else if rows.is_empty() {
        println!("no campaign outcomes ingested yet (ingest a campaign_outcomes file first)");
    } else {
        print_uplift(&v);
    }
    Ok(())
}

fn personal(ws: &Workspace, reveal: bool) -> Result<Personal> {
    Ok(if reveal {
        Personal::Revealed(Box::new(ws.keys(false)?))
    } else {
        Personal::Masked
    })
}

pub fn explain(workspace: &Path, customer: &str, as_json: bool, reveal: bool) -> Result<()> {
    let ws = Workspace::reader(workspace)?;
    let v = rapport_engine::explain::explain(&ws, customer, &personal(&ws, reveal)?)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("customer {}", v.customer_id);
    for s in &v.sources {
        println!(
            "  source {} id {} (matched on {})",
            s.get("source"),
            s.get("source_customer_id"),
            s.get("matched_on")
        );
    }
    if let Some(scores) = &v.scores {
        println!("scores");
        for (k, val) in scores.0.iter().filter(|(k, val)| k != "customer_id" && !val.is_null()) {
            println!("  {k:<22} {val}");
        }
    }
    let list = |title: &str, items: &Option<Vec<Record>>, fields: &[&str]| {
        let items = items.as_deref().unwrap_or_default();
        if !items.is_empty() {
            println!("{title}");
            for it in items {
                let parts: Vec<String> = fields
                    .iter()
                    .filter(|f| !it.get(f).is_null())
                    .map(|f| format!("{f}={}", it.get(f)))
                    .collect();
                println!("  {}", parts.join("  "));
            }
        }
    };
    list(
        "predicted next-window behaviour",
        &v.behaviour,
        &["behaviour", "predicted_p", "reported_p", "delta"],
    );
    list("survey answers", &v.survey_answers, &["answered_at", "question", "answer"]);
    let gaps = v.gaps.as_deref().unwrap_or_default();
    if gaps.is_empty() {
        println!("gaps: none found");
    } else {
        println!("gaps");
        for g in gaps {
            println!(
                "  {} {} ({}): says {}; behaviour shows {}; Δ {} evidence {}",
                g.get("gap_type"),
                g.get("subject"),
                g.get("direction"),
                g.get("reported_text"),
                g.get("observed_text"),
                g.get("delta"),
                g.get("evidence")
            );
            println!("    → {}", g.get("action"));
        }
    }
    list("consents", &v.consents, &["purpose", "granted", "recorded_at"]);
    Ok(())
}

pub fn sql(workspace: &Path, query: &str, format: &str, reveal: bool, engine: &EngineArgs) -> Result<()> {
    let ws = Workspace::reader(workspace)?;
    let session = rapport_engine::session::Session::with_engine(&ws, engine.engine(None)?);
    let batches = session.query(query, &personal(&ws, reveal)?)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    export::write_text(&batches, OutFormat::parse(format)?, &mut out, false)?;
    out.flush()?;
    Ok(())
}

pub fn export(workspace: &Path, table: &str, format: &str, out: &Path, reveal: bool, engine: &EngineArgs) -> Result<()> {
    let ws = Workspace::reader(workspace)?;
    let session = rapport_engine::session::Session::with_engine(&ws, engine.engine(None)?);
    let rows = export::export_in(&session, table, OutFormat::parse(format)?, out, &personal(&ws, reveal)?)?;
    println!("wrote {rows} rows of {table} to {}", out.display());
    Ok(())
}

pub fn scheduler(bind: std::net::SocketAddr) -> Result<()> {
    eprintln!("rapport scheduler listening on {bind}; commands reach it with --engine df://{bind}");
    Ok(rapport_engine::exec::serve_scheduler(bind)?)
}

pub fn executor(
    scheduler: &str,
    bind: std::net::SocketAddr,
    work_dir: Option<std::path::PathBuf>,
    concurrent_tasks: Option<usize>,
    engine: &EngineArgs,
) -> Result<()> {
    let memory_limit = engine.memory_limit()?;
    eprintln!("rapport executor on {bind}, taking tasks from {scheduler}");
    Ok(rapport_engine::exec::serve_executor(&rapport_engine::exec::ExecutorOptions {
        scheduler: scheduler.to_string(),
        bind,
        work_dir,
        concurrent_tasks,
        memory_limit,
    })?)
}

/// The generator's world switches (`rapport generate`).
#[derive(clap::Args, Debug, Clone)]
pub struct WorldArgs {
    /// How customers spread their purchases: one favourite category, or several.
    #[arg(long, value_parser = ["concentrated", "diffuse"], default_value = "concentrated")]
    taste: String,
    /// Respondents may name up to three preferred categories.
    #[arg(long)]
    multi_category: bool,
    /// The chance that each survey statement is honest (0.5 to 1).
    #[arg(long, default_value_t = 0.9)]
    honesty: f64,
    /// Which misstatements are planted: over-statement only, or both directions.
    #[arg(long, value_parser = ["over", "both"], default_value = "both")]
    misreports: String,
    /// What customers' satisfaction shows in: service experience (complaints, tickets,
    /// reviews, returns) or leaving.
    #[arg(long, value_parser = ["service", "dropout"], default_value = "service")]
    satisfaction: String,
    /// Days of history in the export (at least 60).
    #[arg(long, default_value_t = 730)]
    history_days: u32,
}

impl WorldArgs {
    pub fn into_world(self) -> Result<rapport_synth::World> {
        if !(0.5..=1.0).contains(&self.honesty) {
            bail!(UserError(format!("--honesty {} must be between 0.5 and 1", self.honesty)));
        }
        if self.history_days < 60 {
            bail!(UserError(format!("--history-days {} must be at least 60", self.history_days)));
        }
        Ok(rapport_synth::World {
            taste: if self.taste == "diffuse" {
                rapport_synth::Taste::Diffuse
            } else {
                rapport_synth::Taste::Concentrated
            },
            multi_category: self.multi_category,
            honesty: self.honesty,
            misreports: if self.misreports == "over" {
                rapport_synth::Misreports::Over
            } else {
                rapport_synth::Misreports::Both
            },
            satisfaction: if self.satisfaction == "dropout" {
                rapport_synth::SatisfactionDriver::Dropout
            } else {
                rapport_synth::SatisfactionDriver::Service
            },
            history_days: self.history_days,
        })
    }
}

pub fn generate(customers: usize, seed: u64, out: &Path, clean: bool, world: rapport_synth::World) -> Result<()> {
    if customers == 0 {
        bail!(UserError("--customers must be at least 1".into()));
    }
    let mut opts = rapport_synth::GenerateOptions::new(customers, seed, out);
    opts.dirt = !clean;
    opts.world = world;
    let s = rapport_synth::generate(&opts)?;
    println!(
        "wrote {} people ({} source ids), {} order lines, {} events, {} survey answers to {}",
        s.persons,
        s.source_ids,
        s.order_lines,
        s.events,
        s.survey_answers,
        out.display()
    );
    Ok(())
}

pub fn demo(out: &Path, customers: usize, seed: u64, quiet: bool, engine: &EngineArgs) -> Result<()> {
    let marker = out.join(".rapport-demo");
    if out.exists() {
        if !marker.exists() && std::fs::read_dir(out)?.next().is_some() {
            return Err(UserError(format!(
                "{} exists and is not a Rapport demo folder; choose another --out",
                out.display()
            ))
            .into());
        }
        for sub in ["data", "workspace", "outcomes"] {
            let p = out.join(sub);
            if p.exists() {
                std::fs::remove_dir_all(&p).with_context(|| format!("clearing {}", p.display()))?;
            }
        }
    }
    std::fs::create_dir_all(out)?;
    std::fs::write(&marker, "made by rapport demo; safe to delete\n")?;
    let data = out.join("data");
    println!(
        "1. generating a company of {customers} customers (seed {seed}) in {}",
        data.display()
    );
    generate(customers, seed, &data, false, rapport_synth::World::default())?;
    println!("2. ingesting into {}", out.join("workspace").display());
    // The demo's data are synthetic: its key comes from the seed, so that the same seed
    // gives the same workspace (unified ids and control groups depend on the key).
    let ws_dir = out.join("workspace");
    if !ws_dir.join("key").exists() && std::env::var_os(rapport_store::crypto::KEY_ENV).is_none() {
        rapport_store::fsutil::create_private_dir_all(&ws_dir)?;
        rapport_store::crypto::Keys::write_file(&ws_dir.join("key"), &rapport_store::crypto::Keys::for_demo(seed))?;
    }
    let ws = writer(&ws_dir, "demo", Duration::ZERO, true)?;
    let outcome = rapport_engine::ingest::ingest(&ws, &IngestOptions::new(&data), &Bars::new(quiet))?;
    print_ingest(&ws, &outcome);
    println!("3. running the models");
    let config = data.join("rapport.toml");
    run_in(
        &rapport_engine::session::Session::with_engine(&ws, engine.engine(Some(&config))?),
        None,
        Some(&config),
    )?;
    let outcomes = out.join("outcomes");
    if outcomes.exists() {
        std::fs::remove_dir_all(&outcomes).with_context(|| format!("clearing {}", outcomes.display()))?;
    }
    let sent = simulate_from_truth(&ws, &data.join("truth"), &outcomes, seed)?;
    println!(
        "4. the campaign went out; {sent} outcomes simulated from the generator's truth (planted effects in {})",
        data.join("truth/uplift.csv").display()
    );
    let fed = rapport_engine::ingest::ingest(&ws, &IngestOptions::new(&outcomes), &Bars::new(quiet))?;
    println!(
        "   ingested {} campaign outcome rows",
        fed.quality.tables.get("campaign_outcomes").map_or(0, |t| t.rows_accepted)
    );
    println!("5. measuring uplift against the control groups");
    let rows = rapport_engine::uplift::refresh(&ws)?;
    print_uplift(&rapport_engine::uplift::report(&rows));
    println!("\nopen the report: {}", ws.reports_dir().join("report.html").display());
    println!(
        "query it:        rapport --workspace {} sql \"SELECT count(*) FROM customers\"",
        out.join("workspace").display()
    );
    Ok(())
}

/// For generated data only: how the latest campaign's audience responded, drawn from
/// the generator's truth in `truth_dir`, written as `out_dir/campaign_outcomes.csv`.
/// Returns the rows written.
pub fn simulate_from_truth(ws: &Workspace, truth_dir: &Path, out_dir: &Path, seed: u64) -> Result<usize> {
    let Some(a) = rapport_engine::uplift::latest_audience(ws)? else {
        return Ok(0);
    };
    let members: Vec<rapport_synth::AudienceMember> = a
        .members
        .into_iter()
        .map(|m| rapport_synth::AudienceMember {
            source: m.source,
            source_id: m.source_id,
            action: m.action,
            control: m.control,
        })
        .collect();
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let file = out_dir.join("campaign_outcomes.csv");
    let s = rapport_synth::simulate_outcomes(truth_dir, &members, &a.campaign_id, &a.sent_at, seed, &file)?;
    Ok(s.rows)
}

/// `rapport rekey`: a new key for every personal value and pseudonym.
pub fn rekey(workspace: &Path, new_key_file: Option<&Path>, wait: Duration) -> Result<()> {
    let ws = writer(workspace, "rekey", wait, false)?;
    let r = rapport_store::rekey::rekey(&ws, new_key_file)?;
    println!(
        "re-encrypted {} personal values and {} pseudonyms in {} tables under a new key, now in {}; the old key no longer opens this workspace",
        r.values,
        r.pseudonyms,
        r.tables,
        r.key_file.display()
    );
    if std::env::var_os(rapport_store::crypto::KEY_ENV).is_some() {
        println!(
            "{} still holds the old key: set it to the new key (or unset it and use {}={})",
            rapport_store::crypto::KEY_ENV,
            rapport_store::crypto::KEY_FILE_ENV,
            r.key_file.display()
        );
    }
    Ok(())
}

/// `rapport check`: the workspace against its catalog. Exit 1 on any problem.
pub fn check(workspace: &Path, as_json: bool) -> Result<()> {
    let ws = Workspace::reader(workspace)?;
    let report = ws.check()?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: {} tables, {} parts, {} rows checked (size, SHA-256, Parquet footer, row count)",
            workspace.display(),
            report.tables,
            report.parts,
            report.rows
        );
        if report.awaiting_deletion > 0 {
            println!(
                "{} replaced parts await deletion (a reader was open when they were replaced; the next writer deletes them)",
                report.awaiting_deletion
            );
        }
        for p in &report.problems {
            println!("problem: {p}");
        }
    }
    if report.is_clean() {
        if !as_json {
            println!("ok");
        }
        Ok(())
    } else {
        bail!(WorkspaceDamaged(report.problems.len()))
    }
}

pub fn audit_verify(workspace: &Path) -> Result<()> {
    drop(Workspace::reader(workspace)?);
    let v = rapport_server::audit::verify(workspace)?;
    match v.broken {
        None => {
            println!("{}: {} audit rows, the hash chain holds", workspace.display(), v.rows);
            Ok(())
        }
        Some((seq, why)) => {
            println!(
                "{}: the chain holds for the first {} rows and breaks at row {seq}: {why}",
                workspace.display(),
                v.rows
            );
            bail!(AuditBroken(seq))
        }
    }
}

/// `rapport audit verify` found a broken chain (exit 1, not a user error).
#[derive(Debug)]
struct AuditBroken(i64);

impl std::fmt::Display for AuditBroken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the audit log was changed at row {}", self.0)
    }
}

impl std::error::Error for AuditBroken {}

/// `rapport check` found problems (exit 1, not a user error).
#[derive(Debug)]
struct WorkspaceDamaged(usize);

impl std::fmt::Display for WorkspaceDamaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the workspace has {} problem(s)", self.0)
    }
}

impl std::error::Error for WorkspaceDamaged {}

/// `rapport serve`: the API over the workspace until SIGINT or SIGTERM.
pub fn serve(workspace: &Path, bind: Option<&str>, config_file: Option<&Path>, print_openapi: bool) -> Result<()> {
    if print_openapi {
        println!("{}", rapport_server::openapi_json());
        return Ok(());
    }
    let config = match config_file {
        Some(p) => rapport_store::Config::load(p)?,
        None => rapport_store::Config::default(),
    };
    if config.server.tls_cert.is_some() {
        return Err(UserError(
            "`server.tls_cert`/`tls_key`: this build serves plain HTTP; terminate TLS in a reverse proxy in front of it and leave them unset".into(),
        )
        .into());
    }
    let bind = bind.unwrap_or(&config.server.bind).to_string();
    let options = rapport_server::Options::from_config(config, config_file.map(Path::to_path_buf))?;
    let server = rapport_server::Server::open(workspace, options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    eprintln!("serving {} on http://{bind} (Ctrl-C or SIGTERM stops)", workspace.display());
    let served = runtime.block_on(server.serve(&bind));
    drop(runtime);
    // Records taken before the signal join the workspace before the process ends.
    server.close();
    served.with_context(|| format!("serving on {bind}"))?;
    Ok(())
}

fn role(name: &str) -> Result<rapport_server::auth::Role> {
    rapport_server::auth::Role::parse(name).ok_or_else(|| {
        UserError(format!(
            "--role {name}: expected one of collector, analyst, marketer, privacy, admin"
        ))
        .into()
    })
}

pub fn token_create(workspace: &Path, name: &str, role_name: &str) -> Result<()> {
    let role = role(role_name)?;
    drop(Workspace::reader(workspace)?);
    let token = rapport_server::auth::Tokens::of(workspace).create(name, role)?;
    eprintln!("token {name} ({}); it is shown once and only its hash is kept:", role.name());
    println!("{token}");
    Ok(())
}

pub fn token_list(workspace: &Path) -> Result<()> {
    for t in rapport_server::auth::Tokens::of(workspace).list()? {
        let state = t.revoked_at.map_or("active".to_string(), |r| format!("revoked {r}"));
        println!("{:<24} {:<10} created {}  {state}", t.name, t.role, t.created_at);
    }
    Ok(())
}

pub fn token_revoke(workspace: &Path, name: &str) -> Result<()> {
    rapport_server::auth::Tokens::of(workspace).revoke(name)?;
    println!("revoked {name}");
    Ok(())
}
