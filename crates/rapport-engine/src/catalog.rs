//! What the `products` table says about each product, for content-based
//! recommendations: its category (also used for repeat-purchase categories and stated
//! preferences) and its content features — `category=…`, `brand=…`, `price=band` (the
//! price's quintile among the products), `word=…` for each word of the name (three
//! letters or more, not a number), and for each attribute (the unmapped source columns,
//! stored as a JSON object) `key=value`, or `key=band` for a number (quintile among the
//! products having that key).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::session::{Personal, Session};
use crate::Result;
use rapport_store::schema::Table;

/// Per product id, its category and content features (sorted, without repeats).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Catalog {
    pub category: BTreeMap<String, String>,
    pub features: BTreeMap<String, Vec<String>>,
}

/// Content features as ids for a list of items.
#[derive(Debug, Clone, PartialEq)]
pub struct Indexed {
    /// Per item, its feature ids.
    pub per_item: Vec<Vec<u32>>,
    pub ids: HashMap<String, u32>,
    /// Per feature id, its field (an index into `fields`).
    pub field: Vec<u32>,
    /// Field names in order: `category`, `brand`, `price`, `word`, attribute keys.
    pub fields: Vec<String>,
}

/// One row of the products table, as text.
#[derive(Debug, Default, Clone)]
pub struct ProductRow {
    pub product_id: String,
    pub name: Option<String>,
    pub category: Option<String>,
    pub brand: Option<String>,
    pub price: Option<f64>,
    pub attributes: Option<String>,
}

fn norm(s: &str) -> String {
    s.trim().to_lowercase()
}

/// The band of `v` among the sorted `cuts` (0 to cuts.len()).
fn band(cuts: &[f64], v: f64) -> usize {
    cuts.iter().filter(|c| v >= **c).count()
}

/// Quintile cut points of `values` (fewer when values repeat).
fn quintiles(mut values: Vec<f64>) -> Vec<f64> {
    values.retain(|v| v.is_finite());
    values.sort_by(f64::total_cmp);
    if values.len() < 5 {
        return Vec::new();
    }
    let mut cuts: Vec<f64> = (1..5).map(|q| values[q * values.len() / 5]).collect();
    cuts.dedup();
    cuts
}

impl Catalog {
    /// Reads the products table (empty without it). A product listed by several rows
    /// (several sources or ingests) gets the union of their features and the greatest
    /// category name.
    pub fn read(session: &Session<'_>) -> Result<Self> {
        if !session.workspace().has(Table::Products)? {
            return Ok(Self::default());
        }
        let rows = session.text_rows(
            "SELECT product_id, name, category, brand, CAST(price AS VARCHAR), attributes FROM products
             WHERE product_id IS NOT NULL ORDER BY 1, 2, 3, 4, 5, 6",
            &Personal::Stored,
        )?;
        let rows: Vec<ProductRow> = rows
            .into_iter()
            .filter_map(|r| {
                let mut r = r.into_iter();
                Some(ProductRow {
                    product_id: r.next()??,
                    name: r.next().flatten(),
                    category: r.next().flatten(),
                    brand: r.next().flatten(),
                    price: r.next().flatten().and_then(|p| p.parse().ok()),
                    attributes: r.next().flatten(),
                })
            })
            .collect();
        Ok(Self::from_rows(&rows))
    }

    pub fn from_rows(rows: &[ProductRow]) -> Self {
        let attrs: Vec<Option<serde_json::Map<String, Value>>> = rows
            .iter()
            .map(|r| match r.attributes.as_deref().map(serde_json::from_str::<Value>) {
                Some(Ok(Value::Object(m))) => Some(m),
                _ => None,
            })
            .collect();
        // Quintiles of the price and of each numeric attribute.
        let price_cuts = quintiles(rows.iter().filter_map(|r| r.price).collect());
        let mut numeric: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for m in attrs.iter().flatten() {
            for (k, v) in m {
                if let Some(x) = v.as_f64() {
                    numeric.entry(norm(k)).or_default().push(x);
                }
            }
        }
        let cuts: HashMap<String, Vec<f64>> = numeric.into_iter().map(|(k, v)| (k, quintiles(v))).collect();
        let mut category: BTreeMap<String, String> = BTreeMap::new();
        let mut features: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (r, a) in rows.iter().zip(&attrs) {
            let f = features.entry(r.product_id.clone()).or_default();
            if let Some(c) = r.category.as_deref().filter(|c| !c.trim().is_empty()) {
                f.insert(format!("category={}", norm(c)));
                let e = category.entry(r.product_id.clone()).or_default();
                if c > e.as_str() {
                    *e = c.to_string();
                }
            }
            if let Some(b) = r.brand.as_deref().filter(|b| !b.trim().is_empty()) {
                f.insert(format!("brand={}", norm(b)));
            }
            if let Some(p) = r.price.filter(|p| p.is_finite()) {
                if !price_cuts.is_empty() {
                    f.insert(format!("price={}", band(&price_cuts, p)));
                }
            }
            if let Some(name) = &r.name {
                for w in name.split(|c: char| !c.is_alphanumeric()) {
                    if w.chars().count() >= 3 && !w.chars().all(|c| c.is_ascii_digit()) {
                        f.insert(format!("word={}", w.to_lowercase()));
                    }
                }
            }
            for (k, v) in a.iter().flatten() {
                let k = norm(k);
                let value = match v {
                    Value::String(s) if !s.trim().is_empty() => norm(s),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => match (n.as_f64(), cuts.get(&k)) {
                        (Some(x), Some(c)) if !c.is_empty() => format!("band {}", band(c, x)),
                        _ => n.to_string(),
                    },
                    _ => continue,
                };
                f.insert(format!("{k}={value}"));
            }
        }
        Catalog {
            category,
            features: features.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect(),
        }
    }

    /// The content features of the items `names` as ids (features numbered in name
    /// order, only those of these items), with each feature's field.
    pub fn index(&self, names: &[&str]) -> Indexed {
        let used: BTreeSet<&str> = names
            .iter()
            .filter_map(|n| self.features.get(*n))
            .flat_map(|f| f.iter().map(String::as_str))
            .collect();
        let ids: HashMap<String, u32> = used.iter().enumerate().map(|(i, f)| (f.to_string(), i as u32)).collect();
        let field_name = |f: &str| f.split_once('=').map_or(f, |(k, _)| k).to_string();
        let fields: Vec<String> = used.iter().map(|f| field_name(f)).collect::<BTreeSet<_>>().into_iter().collect();
        let field = used
            .iter()
            .map(|f| fields.binary_search(&field_name(f)).expect("listed") as u32)
            .collect();
        let per_item = names
            .iter()
            .map(|n| {
                self.features
                    .get(*n)
                    .map_or_else(Vec::new, |f| f.iter().map(|x| ids[x.as_str()]).collect())
            })
            .collect();
        Indexed {
            per_item,
            ids,
            field,
            fields,
        }
    }

    /// The feature a stated preferred category matches.
    pub fn category_feature(answer: &str) -> String {
        format!("category={}", norm(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: &str, cat: &str, brand: &str, price: f64, attrs: &str) -> ProductRow {
        ProductRow {
            product_id: id.into(),
            name: Some(name.into()),
            category: Some(cat.into()),
            brand: Some(brand.into()),
            price: Some(price),
            attributes: (!attrs.is_empty()).then(|| attrs.to_string()),
        }
    }

    #[test]
    fn features_from_every_attribute() {
        let rows: Vec<ProductRow> = (0..10)
            .map(|i| {
                row(
                    &format!("P{i}"),
                    if i == 0 { "White hanging HEART t-light holder, 12" } else { "mug" },
                    if i < 5 { "Home" } else { "garden" },
                    "Acme",
                    f64::from(i) * 10.0,
                    &format!(r#"{{"colour": "Red", "weight_g": {}, "organic": true, "tags": [1]}}"#, i * 100),
                )
            })
            .collect();
        let c = Catalog::from_rows(&rows);
        let f = &c.features["P0"];
        for want in [
            "category=home",
            "brand=acme",
            "price=0",
            "word=white",
            "word=hanging",
            "word=heart",
            "word=light",
            "word=holder",
            "colour=red",
            "weight_g=band 0",
            "organic=true",
        ] {
            assert!(f.contains(&want.to_string()), "{want} not in {f:?}");
        }
        // Short words, numbers and arrays give no feature.
        assert!(!f.iter().any(|x| x == "word=12" || x.starts_with("tags") || x == "word=t"), "{f:?}");
        assert!(c.features["P9"].contains(&"price=4".to_string()));
        assert!(c.features["P9"].contains(&"weight_g=band 4".to_string()));
        assert_eq!(c.category["P7"], "garden");
        let ix = c.index(&["P0", "unknown", "P9"]);
        assert!(ix.per_item[1].is_empty() && ix.per_item[0].len() == f.len());
        assert_eq!(
            ix.ids.len(),
            ix.per_item[0].iter().chain(&ix.per_item[2]).collect::<BTreeSet<_>>().len()
        );
        assert!(ix.ids.contains_key(&Catalog::category_feature(" HOME ")));
        assert_eq!(ix.fields, ["brand", "category", "colour", "organic", "price", "weight_g", "word"]);
        assert_eq!(ix.fields[ix.field[ix.ids["word=heart"] as usize] as usize], "word");
    }

    #[test]
    fn bad_attributes_are_ignored_not_fatal() {
        let mut r = row("P1", "", "", "", f64::NAN, "not json");
        r.name = None;
        let c = Catalog::from_rows(&[
            r.clone(),
            ProductRow {
                attributes: Some("[1, 2]".into()),
                ..r
            },
        ]);
        assert!(c.features["P1"].is_empty());
        assert!(c.category.is_empty());
    }
}
