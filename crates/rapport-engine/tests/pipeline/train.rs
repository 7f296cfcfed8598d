//! `rapport train` on the IBM Telco churn export, and on broken labelled files.

use std::path::Path;

use rapport_engine::train::train;

use crate::{json_of, repo_root};

#[test]
fn telco_churn_cross_validated_auc_reaches_the_published_level() {
    let path = repo_root().join("examples/telco-churn/Telco-Customer-Churn.csv.gz");
    let v = json_of(train(&path, "Churn", Some("customerID"), 5, 42));
    assert_eq!(v["rows"], 7043);
    assert_eq!(v["positives"], 1869);
    assert_eq!(v["folds"], 5);
    let auc = v["auc_mean"].as_f64().unwrap();
    // scikit-learn's logistic regression and LightGBM reach about 0.842–0.845.
    assert!(auc >= 0.845, "cross-validated AUC {auc}");
    for m in ["logistic", "gbt", "blend"] {
        assert!(v["models"][m]["auc_mean"].as_f64().unwrap() > 0.83, "{m}: {}", v["models"][m]);
    }
    // The chosen model is the one with the best mean AUC.
    let best = v["model"].as_str().unwrap();
    assert_eq!(v["models"][best]["auc_mean"], v["auc_mean"]);
    // Same seed, same answer.
    assert_eq!(v, json_of(train(&path, "Churn", Some("customerID"), 5, 42)));
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn labelled_rows(n: usize) -> String {
    let mut s = String::from("id;plan;spend;left\n");
    for i in 0..n {
        let plan = ["basic", "plus", "pro"][i % 3];
        s += &format!(
            "c{i};{plan};{};{}\n",
            (i * 37) % 100,
            if (i * 37) % 100 > 60 || i % 7 == 0 { "true" } else { "false" }
        );
    }
    s
}

#[test]
fn other_delimiters_and_formats_and_labels_work() {
    let dir = tempfile::tempdir().unwrap();
    let csv = write(dir.path(), "churn.csv", &labelled_rows(200));
    let v = json_of(train(&csv, "left", Some("id"), 4, 1));
    assert_eq!(v["rows"], 200);
    assert!(v["auc_mean"].as_f64().unwrap() > 0.7);
    let mut jsonl = String::new();
    for i in 0..200 {
        jsonl += &format!(
            "{{\"id\": \"c{i}\", \"spend\": {}, \"left\": {}}}\n",
            (i * 37) % 100,
            u8::from((i * 37) % 100 > 60)
        );
    }
    let j = write(dir.path(), "churn.jsonl", &jsonl);
    assert_eq!(json_of(train(&j, "left", None, 3, 1))["rows"], 200);
}

#[test]
fn broken_labelled_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let good = labelled_rows(50);
    let cases = [
        ("missing_target.csv", good.clone(), "nope", "no column \"nope\""),
        (
            "bad_label.csv",
            good.replacen(";true\n", ";maybe\n", 1),
            "left",
            "\"maybe\" is not a yes/no label",
        ),
        (
            "short_row.csv",
            good.replacen(";true\n", "\n", 1),
            "left",
            "3 fields, the header has 4",
        ),
        ("empty.csv", String::new(), "left", "empty"),
        (
            "one_class.csv",
            good.replace(";true\n", ";false\n"),
            "left",
            "each class needs at least",
        ),
        ("dup.csv", good.replacen("spend", "plan", 1), "left", "appears twice"),
    ];
    for (name, text, target, want) in cases {
        let p = write(dir.path(), name, &text);
        let err = train(&p, target, Some("id"), 5, 1).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains(name), "{name}: {err}");
    }
    let p = write(dir.path(), "garbage.parquet", "not parquet at all");
    assert!(train(&p, "left", None, 5, 1).is_err());
}
