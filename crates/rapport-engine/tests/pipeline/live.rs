//! Live rescoring between runs (what the server's intake does after every flush): the
//! models a run keeps in `models/scoring.bin` give back the run's own scores, and
//! customers whose events or orders arrive later are scored as a run's code would score
//! them at that date with the same models — through a few customers' rows only — and get
//! recommendations folded into the run's ALS factors from all their purchases.

use std::collections::HashMap;
use std::path::Path;

use rapport_engine::config::ModelsConfig;
use rapport_engine::days::{day_text, parse_as_of};
use rapport_engine::live::{Scoring, ScoringState};
use rapport_engine::recs::StoredAls;
use rapport_engine::run::predict::{matrix, Snapshot};
use rapport_engine::session::{float_column, int_column, text_column, Personal, Session};
use rapport_store::{IngestOptions, NoProgress, Workspace};

use super::{copy_dir, generated_run};

/// Per customer: churn probability, loyalty score, RFM scores and segment.
type Scores = (Option<f64>, Option<f64>, Option<(i64, i64, i64, String)>);

/// Every customer's stored scores, and whether they were scored live.
fn stored(ws: &Workspace) -> HashMap<String, (Scores, bool)> {
    let columns = rapport_engine::export::query(ws, "SELECT * FROM customers LIMIT 1", &Personal::Stored).unwrap();
    // A run's own table has no `live` column; the first live rescoring adds it.
    let live = if columns[0].schema().column_with_name("live").is_some() {
        "live"
    } else {
        "false"
    };
    let batches = rapport_engine::export::query(
        ws,
        &format!(
            "SELECT customer_id, churn_probability, loyalty_score, CAST(rfm_r AS BIGINT), CAST(rfm_f AS BIGINT),
                    CAST(rfm_m AS BIGINT), rfm_segment, {live} FROM customers"
        ),
        &Personal::Stored,
    )
    .unwrap();
    let mut out = HashMap::new();
    for b in &batches {
        let (id, churn, loyalty) = (text_column(b, 0).unwrap(), float_column(b, 1).unwrap(), float_column(b, 2).unwrap());
        let (r, f, m, seg) = (
            int_column(b, 3).unwrap(),
            int_column(b, 4).unwrap(),
            int_column(b, 5).unwrap(),
            text_column(b, 6).unwrap(),
        );
        let live = b
            .column(7)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::BooleanArray>()
            .unwrap();
        use datafusion::arrow::array::Array;
        for i in 0..b.num_rows() {
            let opt = |c: &datafusion::arrow::array::Float64Array| (!c.is_null(i)).then(|| c.value(i));
            let rfm = (!r.is_null(i)).then(|| (r.value(i), f.value(i), m.value(i), seg.value(i).to_string()));
            out.insert(id.value(i).to_string(), ((opt(&churn), opt(&loyalty), rfm), live.value(i)));
        }
    }
    out
}

/// The `recommendations` table: per customer, (rank, product, score, reason) in rank order.
fn recommendations(ws: &Workspace) -> HashMap<String, Vec<(i64, String, f64, String)>> {
    let batches = rapport_engine::export::query(
        ws,
        "SELECT customer_id, rank, product_id, score, reason FROM recommendations ORDER BY customer_id, rank",
        &Personal::Stored,
    )
    .unwrap();
    let mut out: HashMap<String, Vec<(i64, String, f64, String)>> = HashMap::new();
    for b in &batches {
        let (c, r, p, s, why) = (
            text_column(b, 0).unwrap(),
            int_column(b, 1).unwrap(),
            text_column(b, 2).unwrap(),
            float_column(b, 3).unwrap(),
            text_column(b, 4).unwrap(),
        );
        for i in 0..b.num_rows() {
            out.entry(c.value(i).to_string())
                .or_default()
                .push((r.value(i), p.value(i).to_string(), s.value(i), why.value(i).to_string()));
        }
    }
    out
}

/// Each customer's purchases as the run's ALS counts them: order lines per product.
fn baskets(ws: &Workspace, als: &StoredAls) -> HashMap<String, Vec<(u32, f64)>> {
    let batches = rapport_engine::export::query(
        ws,
        "SELECT customer_id, product_id, CAST(count(*) AS DOUBLE) FROM orders
         WHERE product_id IS NOT NULL AND quantity > 0 AND status = 'completed' GROUP BY 1, 2",
        &Personal::Stored,
    )
    .unwrap();
    let mut out: HashMap<String, std::collections::BTreeMap<u32, f64>> = HashMap::new();
    for b in &batches {
        let (c, p, n) = (text_column(b, 0).unwrap(), text_column(b, 1).unwrap(), float_column(b, 2).unwrap());
        for i in 0..b.num_rows() {
            if let Some(item) = als.item(p.value(i)) {
                *out.entry(c.value(i).to_string()).or_default().entry(item).or_insert(0.0) += n.value(i);
            }
        }
    }
    out.into_iter().map(|(c, b)| (c, b.into_iter().collect())).collect()
}

/// Every customer's scores as the run's code computes them over the whole workspace as
/// of `day`, with the models of `state`.
fn as_a_run_scores(ws: &Workspace, state: &ScoringState, day: i64) -> HashMap<String, Scores> {
    let session = Session::new(ws);
    let inputs = rapport_engine::run::model_inputs(&session, &ModelsConfig::default(), Some(&day_text(day))).unwrap();
    let f = &inputs.features;
    let names = &state.models.names;
    let snap = Snapshot {
        features: f,
        activity: &inputs.activity,
        day,
    };
    let cuts = state.rfm.as_ref().unwrap();
    (0..f.len())
        .map(|i| {
            let scores = if f.purchase_days[i] > 0.0 {
                let x = matrix(&snap, &[i], names);
                let churn = state.models.churn.as_ref().unwrap().predict(&x)[0];
                let loyalty = state.models.loyalty.as_ref().unwrap().predict(&x, names.len())[0];
                let r = cuts.score((day - f.last_day[i].unwrap()) as f64, f.orders[i], f.revenue[i]);
                (
                    Some(churn),
                    Some(loyalty),
                    Some((i64::from(r.r), i64::from(r.f), i64::from(r.m), r.segment.to_string())),
                )
            } else {
                (None, None, None)
            };
            (f.customer_id[i].clone(), scores)
        })
        .collect()
}

fn assert_same(what: &str, id: &str, got: &Scores, want: &Scores) {
    let near = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => (a - b).abs() <= 1e-9,
        (None, None) => true,
        _ => false,
    };
    assert!(
        near(got.0, want.0) && near(got.1, want.1) && got.2 == want.2,
        "{what}, customer {id}: stored {got:?}, computed {want:?}"
    );
}

#[test]
fn live_rescoring_gives_the_runs_scores_and_scores_new_activity_as_a_run_would() {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let ws_dir = root.join("ws");
    copy_dir(&generated_run().join("ws"), &ws_dir);
    let ws = Workspace::existing_writer(&ws_dir, &rapport_store::Writer::new("test")).unwrap();
    let scoring = Scoring::of_workspace(&ws).expect("a run's scoring");
    let state = scoring.state.clone().expect("the run kept its models in models/scoring.bin");
    assert!(state.models.churn.is_some() && state.models.loyalty.is_some() && state.rfm.is_some());
    let run_day = scoring.as_of_day;

    // The kept models (read back from JSON) give every customer the run's scores.
    let before = stored(&ws);
    let recomputed = as_a_run_scores(&ws, &state, run_day);
    assert_eq!(before.len(), recomputed.len());
    for (id, want) in &recomputed {
        assert_same("as the run scored", id, &before[id].0, want);
    }

    // Events for 40 buyers on the run's last day, and an order for 5 others two days on.
    let batches = rapport_engine::export::query(
        &ws,
        "SELECT s.source, s.source_customer_id, s.customer_id FROM customer_sources s JOIN customers c
           ON c.customer_id = s.customer_id WHERE c.churn_probability IS NOT NULL ORDER BY s.customer_id, s.source LIMIT 400",
        &Personal::Stored,
    )
    .unwrap();
    let mut picked: Vec<(String, String, String)> = Vec::new();
    for b in &batches {
        let (src, sid, cid) = (text_column(b, 0).unwrap(), text_column(b, 1).unwrap(), text_column(b, 2).unwrap());
        for i in 0..b.num_rows() {
            if picked.last().is_none_or(|p| p.2 != cid.value(i)) {
                picked.push((src.value(i).into(), sid.value(i).into(), cid.value(i).into()));
            }
        }
    }
    assert!(picked.len() >= 45);
    let event_type = state
        .models
        .names
        .iter()
        .find_map(|n| n.strip_prefix("events:"))
        .expect("an event column in the models");
    let data = root.join("live");
    std::fs::create_dir_all(&data).unwrap();
    let day = day_text(run_day);
    let mut events = String::from("customer_id,source,event_type,occurred_at,channel\n");
    for (src, sid, _) in &picked[..40] {
        for h in 10..13 {
            events.push_str(&format!("{sid},{src},{event_type},{day} {h}:00:00,web\n"));
        }
    }
    std::fs::write(data.join("events.csv"), events).unwrap();
    let later = day_text(run_day + 2);
    let mut orders = String::from("order_id,customer_id,source,ordered_at,product_id,quantity,unit_price,channel,status\n");
    for (k, (src, sid, _)) in picked[40..45].iter().enumerate() {
        orders.push_str(&format!("LIVE{k},{sid},{src},{later} 09:00:00,P001,2,30.00,web,completed\n"));
    }
    std::fs::write(data.join("orders.csv"), orders).unwrap();
    let recs_before = recommendations(&ws);
    rapport_engine::ingest::ingest_live(&ws, &IngestOptions::new(&data), &NoProgress).unwrap();

    // The touched customers are scored as of the batch's latest day, as a run over the
    // whole workspace would score them with the same models; nobody else changes.
    let after = stored(&ws);
    let later_day = parse_as_of(&later).unwrap();
    let as_a_run = as_a_run_scores(&ws, &state, later_day);
    let touched: Vec<&String> = picked[..45].iter().map(|p| &p.2).collect();
    let mut changed = 0;
    for (id, (scores, live)) in &after {
        if touched.contains(&id) {
            assert!(live, "{id} was rescored");
            assert_same("scored live", id, scores, &as_a_run[id]);
            changed += usize::from(scores.0 != before[id].0 .0);
        } else {
            assert!(!live, "{id} was not touched");
            assert_eq!(scores, &before[id].0, "{id} keeps the run's scores");
        }
    }
    assert!(changed >= 40, "only {changed} of 45 churn probabilities moved");

    // Their recommendations are folded in again from all their purchases — what they just
    // bought left out — and nobody else's change.
    let recs_after = recommendations(&ws);
    let als = StoredAls::read(&ws).unwrap();
    let all_baskets = baskets(&ws, &als);
    for (id, list) in &recs_after {
        if touched.contains(&id) {
            let want = als.recommend(&all_baskets[id], recs_before[id].len());
            let got: Vec<(String, f64)> = list.iter().map(|r| (r.1.clone(), r.2)).collect();
            assert_eq!(got, want, "{id}");
            assert!(
                list.iter().enumerate().all(|(k, r)| r.0 == k as i64 + 1 && r.3 == "als"),
                "{list:?}"
            );
        } else {
            assert_eq!(list, &recs_before[id], "{id} keeps the run's recommendations");
        }
    }
    for (_, _, id) in &picked[40..45] {
        assert!(
            recs_after[id].iter().all(|r| r.1 != "P001"),
            "{id} just bought P001: {:?}",
            recs_after[id]
        );
    }
    assert_eq!(recs_after.len(), recs_before.len());

    // Events alone, three days after the run: the customers are scored as of that day.
    let third = day_text(run_day + 3);
    let mut events = String::from("customer_id,source,event_type,occurred_at,channel\n");
    for (src, sid, _) in &picked[45..48] {
        events.push_str(&format!("{sid},{src},{event_type},{third} 08:00:00,app\n"));
    }
    std::fs::remove_file(data.join("orders.csv")).unwrap();
    std::fs::write(data.join("events.csv"), events).unwrap();
    rapport_engine::ingest::ingest_live(&ws, &IngestOptions::new(&data), &NoProgress).unwrap();
    let again = stored(&ws);
    let as_a_run = as_a_run_scores(&ws, &state, run_day + 3);
    for (src, sid, id) in &picked[45..48] {
        assert!(again[id].1, "{src} {sid}");
        assert_same("scored live on an event", id, &again[id].0, &as_a_run[id]);
        assert_ne!(again[id].0, before[id].0);
    }
    for (id, scores) in &after {
        if !picked[45..48].iter().any(|p| &p.2 == id) {
            assert_eq!(&again[id], scores, "{id} is not touched again");
        }
    }
}
