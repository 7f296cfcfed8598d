//! `rapport run` end to end: the CDNOW sample from its raw file, through its
//! rapport.toml, reproduces the published CLV fits.

use rapport_engine::config::ModelsConfig;
use rapport_engine::results::{ClusterReport, Fit, ModelsReport};
use rapport_engine::session::Session;

use crate::{ingest, json_of, repo_root, scalar};

/// models.json on disk reads back into the same report.
fn reads_back(ws: &rapport_store::Workspace, m: &ModelsReport) {
    let disk = rapport_engine::report::read_models(ws).unwrap().expect("models.json written");
    assert_eq!(disk.to_json(), m.to_json());
}

#[test]
fn cdnow_sample_from_the_raw_file_reproduces_the_papers() {
    let dir = tempfile::tempdir().unwrap();
    let ws_dir = dir.path().join("ws");
    ingest(&ws_dir, &repo_root().join("examples/cdnow-sample")).unwrap();
    let ws = crate::writer(&ws_dir);
    let config = rapport_store::Config::load(&repo_root().join("examples/cdnow-sample/rapport.toml")).unwrap();
    let mut cfg = ModelsConfig::from_table(config.models.as_ref()).unwrap();
    cfg.horizons_days = vec![90, 364];
    let s = rapport_engine::run::run(&ws, &cfg, Some("1997-09-30")).unwrap();
    let m = &s.models;
    reads_back(&ws, m);
    assert_eq!(m.time_unit, "week");
    let rel = |v: f64, want: f64| (v - want).abs() / want;
    let b = m.bgnbd.as_ref().unwrap();
    assert!(b.converged);
    let bp = b.params().unwrap();
    for (k, v, want) in [
        ("r", bp.r, 0.2426),
        ("alpha", bp.alpha, 4.4136),
        ("a", bp.a, 0.7929),
        ("b", bp.b, 2.4259),
    ] {
        assert!(rel(v, want) <= 1e-3, "bgnbd {k}: {v}");
    }
    assert!((b.log_likelihood.unwrap() + 9582.43).abs() < 0.01);
    let p = m.pareto_nbd.as_ref().unwrap().params().unwrap();
    for (k, v, want) in [
        ("r", p.r, 0.5532),
        ("alpha", p.alpha, 10.576),
        ("s", p.s, 0.6063),
        ("beta", p.beta, 11.672),
    ] {
        assert!(rel(v, want) <= 2e-3, "pareto_nbd {k}: {v}");
    }
    let g = m.gamma_gamma.params().unwrap();
    for (k, v, want) in [("p", g.p, 6.2488), ("q", g.q, 3.7446), ("gamma", g.gamma, 15.4477)] {
        assert!(rel(v, want) <= 1e-3, "gamma_gamma {k}: {v}");
    }
    // Customer 1516 (sample id): 26 repeat purchase days.
    let p_alive: f64 = scalar(
        &ws_dir,
        "SELECT p_alive FROM customers WHERE customer_id = (SELECT customer_id FROM customer_sources WHERE source_customer_id = '1516')",
    )
    .parse()
    .unwrap();
    assert!((p_alive - 0.96885).abs() < 2e-3, "{p_alive}");
    let e52: f64 = scalar(&ws_dir, "SELECT expected_orders_364d FROM customers WHERE customer_id = (SELECT customer_id FROM customer_sources WHERE source_customer_id = '1516')")
        .parse()
        .unwrap();
    assert!((e52 - 25.757).abs() < 0.1, "{e52}");
    assert_eq!(
        scalar(
            &ws_dir,
            "SELECT count(*) FROM customers WHERE p_alive < 0 OR p_alive > 1 OR clv < 0"
        ),
        "0"
    );
    assert_eq!(scalar(&ws_dir, "SELECT count(*) FROM customers"), "2357");
    // Data after the as-of date is ignored.
    assert!(scalar(&ws_dir, "SELECT CAST(max(last_order_at) AS VARCHAR) FROM customers").as_str() <= "1997-09-30T23:59:59Z");
    // Segments: every buyer in exactly one RFM segment and one cluster.
    assert_eq!(
        scalar(&ws_dir, "SELECT CAST(sum(customers) AS BIGINT) FROM segments WHERE kind = 'rfm'"),
        "2357"
    );
    assert_eq!(
        scalar(
            &ws_dir,
            "SELECT CAST(sum(customers) AS BIGINT) FROM segments WHERE kind = 'cluster'"
        ),
        "2357"
    );
    let share: f64 = scalar(&ws_dir, "SELECT sum(revenue_share) FROM segments WHERE kind = 'rfm'")
        .parse()
        .unwrap();
    assert!((share - 1.0).abs() < 1e-9);
    // k is at least the configured minimum, chosen with the gap statistic's support on
    // record; every segment says what sets it apart, in numbers.
    let Some(ClusterReport::Kmeans(km)) = &m.kmeans else {
        panic!("no k-means: {:?}", m.kmeans)
    };
    assert!(km.k >= cfg.k_min && km.k <= cfg.k_max, "{km:?}");
    assert_eq!(km.gap_by_k.len(), cfg.k_max + 1, "{km:?}");
    assert!(km.criterion.contains("gap statistic"), "{km:?}");
    assert_eq!(
        scalar(
            &ws_dir,
            "SELECT count(*) FROM segments WHERE description NOT LIKE '%: median % vs % for all buyers (%sd)%'"
        ),
        "0"
    );
    assert_eq!(
        scalar(
            &ws_dir,
            "SELECT CAST(count(DISTINCT name) AS BIGINT) FROM segments WHERE kind = 'cluster'"
        ),
        km.k.to_string()
    );
    assert!(ws.reports_dir().join("models.json").is_file());
    // New orders after the run: the ingest rebuilds `customers` without the model
    // columns, and its report says the models need another run (it used to fail).
    drop(ws);
    let more = dir.path().join("more");
    std::fs::create_dir_all(&more).unwrap();
    std::fs::write(
        more.join("orders.csv"),
        "order_id,customer_id,ordered_at,amount\nlate-1,1516,1998-07-01,12.5\n",
    )
    .unwrap();
    ingest(&ws_dir, &more).unwrap();
    let report = std::fs::read_to_string(ws_dir.join("reports/report.html")).unwrap();
    assert!(
        report.contains("New data came in since the last"),
        "the report explains the missing model sections"
    );
}

#[test]
fn the_holdout_checks_match_the_btyd_walkthrough() {
    let dir = tempfile::tempdir().unwrap();
    let ws_dir = dir.path().join("ws");
    ingest(&ws_dir, &repo_root().join("examples/cdnow-sample")).unwrap();
    let ws = crate::writer(&ws_dir);
    let v = json_of(rapport_engine::evaluate::evaluate(&ws, &ModelsConfig::default(), 273));
    assert_eq!(v["calibration_end"], "1997-09-30");
    // The churn model fitted at the cut-off, checked on the 90 days after it.
    let c = &v["churn"];
    assert_eq!(c["evaluated"], true, "{c}");
    assert!(c["auc"].as_f64().unwrap() > 0.6, "{c}");
    assert_eq!(c["calibration"].as_array().unwrap().len(), 10);
    assert_eq!(v["holdout_actual"].as_f64().unwrap(), 1882.0);
    assert!((v["holdout_forecast"]["bgnbd"].as_f64().unwrap() - 1653.4).abs() < 0.5);
    assert!((v["holdout_forecast"]["pareto_nbd"].as_f64().unwrap() - 1665.5).abs() < 0.5);
    let bins = v["by_calibration_frequency"].as_array().unwrap();
    let actual = [0.2367, 0.6970, 1.3925, 1.5600, 2.5323, 2.9474, 3.8621, 6.3594];
    let bgnbd = [0.2251, 0.5231, 1.0441, 1.5203, 2.1638, 2.6538, 3.5040, 6.1570];
    let pnbd = [0.138, 0.600, 1.196, 1.714, 2.399, 2.907, 3.819, 6.403];
    let sizes = [1411, 439, 214, 100, 62, 38, 29, 64];
    for (i, b) in bins.iter().enumerate() {
        assert_eq!(b["customers"].as_u64().unwrap(), sizes[i]);
        assert!((b["actual"].as_f64().unwrap() - actual[i]).abs() < 1e-4, "{b}");
        assert!((b["bgnbd"].as_f64().unwrap() - bgnbd[i]).abs() < 1e-3, "{b}");
        assert!((b["pareto_nbd"].as_f64().unwrap() - pnbd[i]).abs() < 2e-3, "{b}");
    }
}

fn models_json(ws_dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(ws_dir.join("reports/models.json")).unwrap()).unwrap()
}

#[test]
fn generated_company_gets_churn_loyalty_behaviour_rates_and_forecasts() {
    let ws_dir = crate::generated_run().join("ws");
    let m = models_json(&ws_dir);
    // Churn: a time-split model that ranks far better than chance, with its diagnostics.
    let c = &m["churn"];
    assert_eq!(c["fitted"], true, "{c}");
    assert!(c["auc"].as_f64().unwrap() > 0.7, "{c}");
    for k in ["precision", "recall", "f1", "threshold", "brier", "log_loss"] {
        assert!(c[k].as_f64().unwrap().is_finite(), "{k}");
    }
    assert_eq!(c["calibration"].as_array().unwrap().len(), 10);
    assert!(["logistic", "gbt", "blend"].contains(&c["model"].as_str().unwrap()));
    let bad = scalar(
        &ws_dir,
        "SELECT count(*) FROM customers WHERE (orders > 0 AND (churn_probability IS NULL OR churn_probability < 0 OR churn_probability > 1))
                                         OR (orders = 0 AND churn_probability IS NOT NULL)",
    );
    assert_eq!(bad, "0");
    // Loyalty: coefficients with standard errors, R² and MSE.
    let l = &m["loyalty"];
    assert_eq!(l["fitted"], true, "{l}");
    assert!(l["r2"].as_f64().unwrap() > 0.1 && l["mse"].as_f64().unwrap() > 0.0, "{l}");
    assert_eq!(l["indicators"].as_array().unwrap().len(), 4);
    for (name, v) in l["coefficients"].as_object().unwrap() {
        assert!(v["std_error"].as_f64().is_some_and(|s| s > 0.0), "{name}: {v}");
    }
    assert_eq!(
        scalar(
            &ws_dir,
            "SELECT count(*) FROM customers WHERE loyalty_score < 0 OR loyalty_score > 1"
        ),
        "0"
    );
    // Behaviour: better than the class frequencies, probabilities summing to one.
    let b = &m["behaviour"];
    assert!(b["log_loss"].as_f64().unwrap() < b["baseline_log_loss"].as_f64().unwrap(), "{b}");
    let classes = b["classes"].as_array().unwrap().len();
    assert!(classes >= 4, "{b}");
    assert_eq!(
        scalar(&ws_dir, "SELECT count(*) FROM (SELECT customer_id, sum(predicted_p) AS s, count(*) AS k FROM behaviour GROUP BY 1) WHERE abs(s - 1) > 1e-9"),
        "0"
    );
    assert_eq!(scalar(&ws_dir, "SELECT count(*) FROM behaviour"), (4000 * classes).to_string());
    // Outcome rates: every segment's shrunk rate inside its interval.
    assert_eq!(
        scalar(
            &ws_dir,
            "SELECT count(*) FROM outcome_rates WHERE NOT (lower <= rate AND rate <= upper)"
        ),
        "0"
    );
    assert_eq!(scalar(&ws_dir, "SELECT count(DISTINCT outcome) FROM outcome_rates"), "2");
    // Forecasts: 12 future weeks for every series, intervals around the forecast.
    assert_eq!(
        scalar(
            &ws_dir,
            "SELECT count(*) FROM forecasts WHERE series = 'all' AND metric = 'orders' AND actual IS NULL"
        ),
        "12"
    );
    assert_eq!(
        scalar(
            &ws_dir,
            "SELECT count(*) FROM forecasts WHERE NOT (lower <= forecast AND forecast <= upper)"
        ),
        "0"
    );
    let weeks: usize = scalar(
        &ws_dir,
        "SELECT count(*) FROM forecasts WHERE series = 'all' AND metric = 'orders' AND actual IS NOT NULL",
    )
    .parse()
    .unwrap();
    assert_eq!(weeks, m["forecasts"]["weeks_observed"].as_u64().unwrap() as usize);
    // Recommendations: ten per customer, never a product the customer already bought.
    assert_eq!(
        scalar(
            &ws_dir,
            "SELECT count(*) FROM (SELECT customer_id, count(*) AS n FROM recommendations GROUP BY 1) WHERE n <> 10"
        ),
        "0"
    );
    assert_eq!(
        scalar(
            &ws_dir,
            "SELECT count(*) FROM recommendations r JOIN orders o ON r.customer_id = o.customer_id AND r.product_id = o.product_id
             WHERE o.quantity > 0 AND o.status = 'completed'"
        ),
        "0"
    );
    assert_eq!(
        scalar(
            &ws_dir,
            "SELECT count(DISTINCT reason) FROM recommendations WHERE reason NOT IN ('item_knn', 'als', 'co_purchase', 'content', 'popular')"
        ),
        "0"
    );
    // Content from the product attributes: the generator's customers choose by
    // category, not by brand or colour (an attribute column the products table does not
    // define), and the field weights learnt from the baskets say so.
    let fw = &m["recommendations"]["content_field_weights"];
    assert!(fw["category"].as_f64().unwrap() > 1.0, "{fw}");
    for f in ["brand", "colour", "price", "word"] {
        assert!(fw[f].as_f64().unwrap() < 0.05, "{f}: {fw}");
    }
    // New arrivals (in the catalogue, bought by nobody): only content recommends them,
    // in the last place, and in the category the customer buys most.
    assert_eq!(
        scalar(
            &ws_dir,
            "SELECT count(*) FROM recommendations WHERE product_id LIKE 'N%' AND (reason <> 'content' OR rank <> 10)"
        ),
        "0"
    );
    let fresh: f64 = scalar(&ws_dir, "SELECT count(*) FROM recommendations WHERE product_id LIKE 'N%'")
        .parse()
        .unwrap();
    let matching: f64 = scalar(
        &ws_dir,
        "WITH mix AS (SELECT o.customer_id, p.category, count(*) AS n FROM orders o JOIN products p ON o.product_id = p.product_id
                      WHERE o.quantity > 0 AND o.status = 'completed' GROUP BY 1, 2),
              top AS (SELECT customer_id, category FROM (SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY n DESC, category) AS k FROM mix) WHERE k = 1)
         SELECT count(*) FROM recommendations r JOIN products p ON r.product_id = p.product_id JOIN top t ON t.customer_id = r.customer_id
         WHERE r.product_id LIKE 'N%' AND p.category = t.category",
    )
    .parse()
    .unwrap();
    assert!(fresh > 1000.0 && matching / fresh > 0.9, "{matching} of {fresh}");
    // The weekly actuals add up to the orders.
    let total: f64 = scalar(
        &ws_dir,
        "SELECT sum(actual) FROM forecasts WHERE series = 'all' AND metric = 'orders'",
    )
    .parse()
    .unwrap();
    let orders: f64 = scalar(&ws_dir, "SELECT sum(orders) FROM customers").parse().unwrap();
    assert_eq!(total, orders);
}

#[test]
fn online_retail_runs_and_says_which_gap_analyses_need_which_tables() {
    let dir = tempfile::tempdir().unwrap();
    let ws_dir = dir.path().join("ws");
    ingest(&ws_dir, &repo_root().join("examples/online-retail")).unwrap();
    let ws = crate::writer(&ws_dir);
    let s = rapport_engine::run::run(&ws, &ModelsConfig::default(), None).unwrap();
    let m = &s.models;
    reads_back(&ws, m);
    assert_eq!(s.customers, 4372);
    assert!(matches!(m.churn, Fit::Fitted(_)), "{:?}", m.churn);
    // No surveys, events or products: the gap analyses say what they need.
    let missing = &m.gaps.not_computed;
    assert!(missing["frequency, category, satisfaction"].contains("surveys"));
    assert!(missing["category"].contains("products"));
    assert!(missing.contains_key("knowledge") && missing.contains_key("profile"));
    assert_eq!(scalar(&ws_dir, "SELECT count(*) FROM gaps"), "0");
    assert!(ws.reports_dir().join("report.html").is_file());
}

#[test]
fn dbscan_is_an_option_with_noise_and_named_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let ws_dir = dir.path().join("ws");
    ingest(&ws_dir, &repo_root().join("examples/cdnow-sample")).unwrap();
    let ws = crate::writer(&ws_dir);
    let table: toml::Table =
        toml::from_str("clustering = \"dbscan\"\ndbscan_eps = 0.4\ndbscan_min_points = 15\ntime_unit = \"week\"").unwrap();
    let cfg = ModelsConfig::from_table(Some(&table)).unwrap();
    let s = rapport_engine::run::run(&ws, &cfg, Some("1997-09-30")).unwrap();
    reads_back(&ws, &s.models);
    let Some(ClusterReport::Dbscan(k)) = &s.models.kmeans else {
        panic!("not DBSCAN: {:?}", s.models.kmeans)
    };
    assert!(k.k >= 1, "{k:?}");
    let clustered: u64 = scalar(&ws_dir, "SELECT count(*) FROM customers WHERE cluster IS NOT NULL")
        .parse()
        .unwrap();
    let noise = k.noise as u64;
    assert_eq!(clustered + noise, s.modelled as u64);
    assert_eq!(
        scalar(
            &ws_dir,
            "SELECT CAST(sum(customers) AS BIGINT) FROM segments WHERE kind = 'cluster'"
        ),
        clustered.to_string()
    );
    let bad: toml::Table = toml::from_str("clustering = \"dbscan\"\ndbscan_eps = -1.0").unwrap();
    assert!(ModelsConfig::from_table(Some(&bad)).unwrap_err().to_string().contains("dbscan_eps"));
}

#[test]
fn online_retail_recommendations_on_a_time_split() {
    let dir = tempfile::tempdir().unwrap();
    let ws_dir = dir.path().join("ws");
    ingest(&ws_dir, &repo_root().join("examples/online-retail")).unwrap();
    let ws = crate::writer(&ws_dir);
    let session = Session::new(&ws);
    let split = rapport_engine::recs::split_day(&session, Some("2011-09-01"), None).unwrap();
    let v = json_of(rapport_engine::recs::evaluate(&session, split, 10, &ModelsConfig::default()));
    assert_eq!(v["customers_evaluated"], 1952);
    let p = |m: &str| v["models"][m]["precision_at_k"].as_f64().unwrap();
    // implicit's best on this split: BM25 (K = 60) 0.0984, ALS 0.0978, popularity 0.0470
    // (examples/online-retail/implicit_baseline.py).
    eprintln!(
        "precision@10: blend {:.4}, item_knn_bm25 {:.4}, als {:.4}, popular {:.4}",
        p("blend"),
        p("item_knn_bm25"),
        p("als"),
        p("popular")
    );
    assert!(p("item_knn_bm25") >= 0.098, "{v}");
    assert!(p("als") >= 0.095, "{v}");
    assert!(p("blend") >= 0.0984, "{v}");
    for m in ["item_knn_bm25", "als", "co_purchase", "content", "popular"] {
        assert!(p("blend") >= p(m), "blend below {m}: {v}");
    }
    assert!(p("item_knn_bm25") > 2.0 * p("popular"), "{v}");
    assert!(rapport_engine::recs::split_day(&session, None, None).is_err());
}
