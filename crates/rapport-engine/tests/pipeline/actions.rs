//! The action loop on generated data: next-best actions under consent, control groups,
//! simulated outcomes from the generator's truth, and uplift against the planted effects.

use std::path::{Path, PathBuf};

use rapport_engine::run::actions::ActionsConfig;
use rapport_engine::session::{text_rows, Personal, Session};
use rapport_store::Workspace;

use super::{copy_dir, generated_run, ingest, json_of};

/// The generated company of `generated_run`, in a workspace of its own, run with a 30 %
/// control share, its campaign's outcomes simulated, ingested and measured.
fn loop_run() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let data = generated_run().join("data");
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("action-loop-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let ws_dir = root.join("ws");
        ingest(&ws_dir, &data).unwrap();
        let ws = Workspace::existing_writer(&ws_dir, &rapport_store::Writer::new("test")).unwrap();
        let policy = ActionsConfig {
            control_share: 0.3,
            ..ActionsConfig::default_policy()
        };
        let cfg = rapport_engine::config::ModelsConfig::default();
        rapport_engine::run::run_with(&ws, &cfg, &policy, None).unwrap();
        let outcomes = root.join("outcomes");
        let n = crate::simulate_from_truth(&ws, &data.join("truth"), &outcomes, 5);
        assert!(n > 500, "{n} outcomes");
        rapport_engine::ingest::ingest(&ws, &rapport_store::IngestOptions::new(&outcomes), &rapport_store::NoProgress).unwrap();
        rapport_engine::uplift::refresh(&ws).unwrap();
        ws_dir
    })
}

fn rows(ws_dir: &Path, sql: &str) -> Vec<Vec<Option<String>>> {
    let ws = Workspace::reader(ws_dir).unwrap();
    text_rows(&ws, sql, &Personal::Stored).unwrap()
}

#[test]
fn no_marketing_without_marketing_consent_and_channels_respected() {
    let ws = loop_run();
    let latest = "(SELECT customer_id, lower(purpose) AS purpose, granted FROM (
                    SELECT *, row_number() OVER (PARTITION BY customer_id, lower(purpose) ORDER BY recorded_at DESC, granted) AS rn
                    FROM consents) WHERE rn = 1)";
    let marketing = rows(ws, "SELECT count(*) FROM actions WHERE marketing")[0][0].clone().unwrap();
    assert!(marketing.parse::<u64>().unwrap() > 500, "{marketing} marketing actions");
    // Every marketing action has a granted marketing consent as its customer's latest word.
    let bad = rows(
        ws,
        &format!(
            "SELECT count(*) FROM actions a LEFT JOIN {latest} c ON a.customer_id = c.customer_id AND c.purpose = 'marketing'
             WHERE a.marketing AND (c.granted IS NULL OR NOT c.granted)"
        ),
    );
    assert_eq!(bad[0][0].as_deref(), Some("0"));
    // No action goes through a channel the customer refused or never granted.
    let bad = rows(
        ws,
        &format!(
            "SELECT count(*) FROM actions a LEFT JOIN {latest} c ON a.customer_id = c.customer_id AND c.purpose = a.channel
             WHERE a.channel IN ('email', 'sms') AND (c.granted IS NULL OR NOT c.granted)"
        ),
    );
    assert_eq!(bad[0][0].as_deref(), Some("0"));
    // Customers without marketing consent exist, and some of them get the care call
    // (a service action), none a marketing one.
    let refused = rows(
        ws,
        &format!("SELECT count(*) FROM {latest} WHERE purpose = 'marketing' AND NOT granted"),
    );
    assert!(refused[0][0].as_deref().unwrap().parse::<u64>().unwrap() > 300);
}

#[test]
fn control_groups_have_the_share_and_are_deterministic() {
    let ws = loop_run();
    let r = rows(
        ws,
        r#"SELECT sum(CASE WHEN "group" = 'control' THEN 1 ELSE 0 END), count(*), count(DISTINCT customer_id) FROM actions"#,
    );
    let (control, total, customers): (f64, f64, f64) = (
        r[0][0].as_deref().unwrap().parse().unwrap(),
        r[0][1].as_deref().unwrap().parse().unwrap(),
        r[0][2].as_deref().unwrap().parse().unwrap(),
    );
    let share = control / total;
    assert!((0.26..0.34).contains(&share), "control share {share}");
    // One action per customer by default.
    assert_eq!(total, customers);
    // The customers table names the treatment group's action, not the control's.
    let r = rows(
        ws,
        r#"SELECT count(*) FROM actions a JOIN customers c ON a.customer_id = c.customer_id
           WHERE (a."group" = 'treatment' AND (c.next_action IS NULL OR c.next_action <> a.action))
              OR (a."group" = 'control' AND c.next_action IS NOT NULL)"#,
    );
    assert_eq!(r[0][0].as_deref(), Some("0"));
    // The same split again from the same seed (in a copy, not to disturb other tests).
    let copy = ws.with_file_name(format!("ws-rerun-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(ws, &copy);
    let ws2 = Workspace::existing_writer(&copy, &rapport_store::Writer::new("test")).unwrap();
    let before = rows(ws, r#"SELECT customer_id, action, "group" FROM actions ORDER BY 1, 2"#);
    let policy = ActionsConfig {
        control_share: 0.3,
        ..ActionsConfig::default_policy()
    };
    rapport_engine::run::run_with(&ws2, &rapport_engine::config::ModelsConfig::default(), &policy, None).unwrap();
    let after = rows(&copy, r#"SELECT customer_id, action, "group" FROM actions ORDER BY 1, 2"#);
    // The campaign was sent after the as-of date, so the rerun sees no recent contact.
    assert_eq!(before, after);
}

#[test]
fn uplift_intervals_cover_the_planted_effects() {
    let ws = loop_run();
    let r = rows(
        ws,
        "SELECT action, treated, control, uplift, ci_low, ci_high FROM uplift ORDER BY action",
    );
    assert!(r.len() >= 4, "{r:?}");
    let mut checked = 0;
    for row in &r {
        let action = row[0].clone().unwrap();
        let f = |k: usize| row[k].as_deref().unwrap().parse::<f64>().unwrap();
        if row[3].is_none() {
            // An audience too small to hold anyone back has no interval.
            assert!(f(1) == 0.0 || f(2) == 0.0, "{row:?}");
            continue;
        }
        let (treated, control, lo, hi) = (f(1), f(2), f(4), f(5));
        assert!(lo <= f(3) && f(3) <= hi);
        let planted = rapport_synth::planted(&action);
        assert!(
            lo <= planted && planted <= hi,
            "{action}: planted {planted} outside [{lo}, {hi}] ({treated} treated, {control} control)"
        );
        if control >= 50.0 {
            checked += 1;
        }
    }
    assert!(checked >= 2, "too few actions with a real control group: {r:?}");
    // Retention offers (planted +8 points) show a positive uplift. (Its 95 % interval
    // excludes zero only about two times in three at this size: a half-width of about
    // 6 points with some 600 treated and 300 held back.)
    let ret = r.iter().find(|x| x[0].as_deref() == Some("retention_offer")).unwrap();
    assert!(ret[3].as_deref().unwrap().parse::<f64>().unwrap() > 0.0, "{ret:?}");
    // The outcomes ingest left the model columns of `customers` in place.
    let c = rows(ws, "SELECT count(*) FROM customers WHERE clv IS NOT NULL");
    assert!(c[0][0].as_deref().unwrap().parse::<u64>().unwrap() > 3000);
}

#[test]
fn generated_recommendations_beat_popularity() {
    let ws = Workspace::reader(&generated_run().join("ws")).unwrap();
    let session = Session::new(&ws);
    let split = rapport_engine::recs::split_day(&session, Some("2024-07-01"), None).unwrap();
    let v = json_of(rapport_engine::recs::evaluate(
        &session,
        split,
        10,
        &rapport_engine::config::ModelsConfig::default(),
    ));
    let p = |m: &str| v["models"][m]["precision_at_k"].as_f64().unwrap();
    assert!(p("blend") >= 1.2 * p("popular"), "{v}");
    assert!(v["customers_evaluated"].as_u64().unwrap() > 1000, "{v}");
    // The same figures on a second evaluation in a new session (query row order must
    // not matter).
    let again = json_of(rapport_engine::recs::evaluate(
        &Session::new(&ws),
        split,
        10,
        &rapport_engine::config::ModelsConfig::default(),
    ));
    assert_eq!(v["models"], again["models"]);
    // The run's table: ten per customer, every reason one of the contract's.
    let r = rows(
        &generated_run().join("ws"),
        "SELECT count(*), count(DISTINCT customer_id), sum(CASE WHEN reason IN ('als', 'item_knn', 'co_purchase', 'popular', 'content') THEN 1 ELSE 0 END) FROM recommendations",
    );
    let n: Vec<u64> = r[0].iter().map(|x| x.as_deref().unwrap().parse().unwrap()).collect();
    assert_eq!(n[0], 10 * n[1]);
    assert_eq!(n[0], n[2]);
}

/// A basket folded into the stored ALS item factors (no refit): a customer's last
/// product, held out of the basket, is found far more often than by popularity (it was
/// in the fit, so this checks that fold-in uses the basket, not generalisation — `rapport
/// evaluate recs` does that), nothing from the basket comes back, and unknown products
/// are named in the error.
#[test]
fn fold_in_recommends_from_a_basket_without_refitting() {
    let ws_dir = generated_run().join("ws");
    let ws = Workspace::reader(&ws_dir).unwrap();
    let firsts = rows(
        &ws_dir,
        "SELECT customer_id, product_id FROM orders WHERE quantity > 0 AND status = 'completed'
         GROUP BY customer_id, product_id ORDER BY customer_id, min(ordered_at), product_id",
    );
    let mut baskets: Vec<(String, Vec<String>)> = Vec::new();
    for r in firsts {
        let (c, p) = (r[0].clone().unwrap(), r[1].clone().unwrap());
        match baskets.last_mut() {
            Some((last, items)) if *last == c => items.push(p),
            _ => baskets.push((c, vec![p])),
        }
    }
    let popular: Vec<String> = rows(
        &ws_dir,
        "SELECT product_id FROM orders WHERE quantity > 0 GROUP BY 1 ORDER BY count(DISTINCT customer_id) DESC, 1 LIMIT 40",
    )
    .into_iter()
    .map(|r| r[0].clone().unwrap())
    .collect();
    let (mut fold_hits, mut pop_hits, mut n) = (0, 0, 0);
    for (_, items) in baskets.iter().filter(|(_, i)| i.len() >= 4).take(300) {
        let (held, basket) = items.split_last().unwrap();
        let basket: Vec<(String, f64)> = basket.iter().map(|p| (p.clone(), 1.0)).collect();
        let recs = rapport_engine::recs::fold_in(&ws, &basket, 10).unwrap();
        assert_eq!(recs.len(), 10);
        assert!(recs.iter().all(|(p, _)| !basket.iter().any(|b| &b.0 == p)));
        fold_hits += usize::from(recs.iter().any(|(p, _)| p == held));
        let pop: Vec<&String> = popular.iter().filter(|p| !basket.iter().any(|b| &b.0 == *p)).take(10).collect();
        pop_hits += usize::from(pop.contains(&held));
        n += 1;
    }
    eprintln!("held-out product in the top 10: fold-in {fold_hits}, popularity {pop_hits} of {n}");
    assert!(n >= 100, "{n} customers with four products");
    assert!(
        fold_hits as f64 >= 1.5 * pop_hits as f64 && fold_hits > 0,
        "fold-in {fold_hits}, popularity {pop_hits}"
    );
    // The same basket gives the same list; unknown products are named.
    let basket = vec![("P043".to_string(), 2.0), ("P196".to_string(), 1.0)];
    assert_eq!(
        rapport_engine::recs::fold_in(&ws, &basket, 5).unwrap(),
        rapport_engine::recs::fold_in(&ws, &basket, 5).unwrap()
    );
    let err = rapport_engine::recs::fold_in(&ws, &[("NOPE".into(), 1.0)], 5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("NOPE"), "{err}");
}
