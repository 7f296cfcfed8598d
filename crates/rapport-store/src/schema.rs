//! The canonical input tables of data-model.md: their columns, types, which are
//! required and which hold personal data.

use std::fmt;

/// The value type of a canonical column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Number,
    Timestamp,
    Date,
    Bool,
    /// A JSON object (events.properties), stored as its JSON text.
    Json,
}

/// One canonical column of an input table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    /// Personal data: encrypted at rest, masked in outputs.
    pub pii: bool,
}

const fn col(name: &'static str, kind: Kind, required: bool) -> Column {
    Column {
        name,
        kind,
        required,
        pii: false,
    }
}

const fn pii(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        required: false,
        pii: true,
    }
}

/// The seven input tables, in the order an ingest processes them: profiles first, so
/// that every other table can be resolved against the identities they establish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputTable {
    Customers,
    Products,
    Orders,
    Events,
    Surveys,
    Consents,
    CampaignOutcomes,
}

use Kind::*;

const CUSTOMERS: &[Column] = &[
    col("customer_id", Str, true),
    col("source", Str, false),
    pii("email", Str),
    pii("phone", Str),
    pii("name", Str),
    pii("birth_date", Date),
    col("gender", Str, false),
    col("city", Str, false),
    col("region", Str, false),
    col("country", Str, false),
    col("signup_at", Timestamp, false),
];

const ORDERS: &[Column] = &[
    col("order_id", Str, false),
    col("customer_id", Str, true),
    col("source", Str, false),
    col("ordered_at", Timestamp, true),
    col("product_id", Str, false),
    col("quantity", Number, false),
    col("unit_price", Number, false),
    col("amount", Number, false),
    col("currency", Str, false),
    col("channel", Str, false),
    col("status", Str, false),
];

const EVENTS: &[Column] = &[
    col("customer_id", Str, true),
    col("source", Str, false),
    col("occurred_at", Timestamp, true),
    col("event_type", Str, true),
    col("channel", Str, false),
    col("product_id", Str, false),
    col("category", Str, false),
    col("subject", Str, false),
    col("value", Number, false),
    col("properties", Json, false),
];

const SURVEYS: &[Column] = &[
    col("customer_id", Str, true),
    col("source", Str, false),
    col("answered_at", Timestamp, true),
    col("question", Str, true),
    col("answer", Str, true),
];

const PRODUCTS: &[Column] = &[
    col("product_id", Str, true),
    col("name", Str, false),
    col("category", Str, false),
    col("price", Number, false),
    col("brand", Str, false),
];

const CONSENTS: &[Column] = &[
    col("customer_id", Str, true),
    col("source", Str, false),
    col("purpose", Str, true),
    col("granted", Bool, true),
    col("recorded_at", Timestamp, true),
];

const CAMPAIGN_OUTCOMES: &[Column] = &[
    col("campaign_id", Str, true),
    col("customer_id", Str, true),
    col("source", Str, false),
    col("action", Str, true),
    col("group", Str, true),
    col("sent_at", Timestamp, true),
    col("opened", Bool, false),
    col("converted", Bool, false),
    col("revenue", Number, false),
];

/// Every table a workspace holds: the input tables as stored, what ingest derives from
/// them, the quarantine, and what a run writes. Its name is the table's name in SQL and
/// in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    CustomerProfiles,
    CustomerSources,
    Customers,
    Products,
    Orders,
    Events,
    Surveys,
    Consents,
    CampaignOutcomes,
    Quarantine,
    Segments,
    Actions,
    Uplift,
    Recommendations,
    ItemFactors,
    Gaps,
    GapSummary,
    KnowledgeGaps,
    Behaviour,
    Forecasts,
    OutcomeRates,
}

impl Table {
    pub const ALL: [Table; 21] = [
        Table::CustomerProfiles,
        Table::CustomerSources,
        Table::Customers,
        Table::Products,
        Table::Orders,
        Table::Events,
        Table::Surveys,
        Table::Consents,
        Table::CampaignOutcomes,
        Table::Quarantine,
        Table::Segments,
        Table::Actions,
        Table::Uplift,
        Table::Recommendations,
        Table::ItemFactors,
        Table::Gaps,
        Table::GapSummary,
        Table::KnowledgeGaps,
        Table::Behaviour,
        Table::Forecasts,
        Table::OutcomeRates,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Table::CustomerProfiles => "customer_profiles",
            Table::CustomerSources => "customer_sources",
            Table::Customers => "customers",
            Table::Products => "products",
            Table::Orders => "orders",
            Table::Events => "events",
            Table::Surveys => "surveys",
            Table::Consents => "consents",
            Table::CampaignOutcomes => "campaign_outcomes",
            Table::Quarantine => "quarantine",
            Table::Segments => "segments",
            Table::Actions => "actions",
            Table::Uplift => "uplift",
            Table::Recommendations => "recommendations",
            Table::ItemFactors => "item_factors",
            Table::Gaps => "gaps",
            Table::GapSummary => "gap_summary",
            Table::KnowledgeGaps => "knowledge_gaps",
            Table::Behaviour => "behaviour",
            Table::Forecasts => "forecasts",
            Table::OutcomeRates => "outcome_rates",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl InputTable {
    pub const ALL: [InputTable; 7] = [
        InputTable::Customers,
        InputTable::Products,
        InputTable::Orders,
        InputTable::Events,
        InputTable::Surveys,
        InputTable::Consents,
        InputTable::CampaignOutcomes,
    ];

    /// The name users give the table in files and in `rapport.toml`.
    pub fn name(self) -> &'static str {
        match self {
            InputTable::Customers => "customers",
            InputTable::Products => "products",
            InputTable::Orders => "orders",
            InputTable::Events => "events",
            InputTable::Surveys => "surveys",
            InputTable::Consents => "consents",
            InputTable::CampaignOutcomes => "campaign_outcomes",
        }
    }

    /// The name of the workspace table the accepted rows are stored in. The input
    /// `customers` table holds one row per customer per source system; it is stored as
    /// `customer_profiles`, and `customers` is the unified, one-row-per-customer view.
    pub fn stored_name(self) -> &'static str {
        self.stored().name()
    }

    /// The workspace table the accepted rows are stored in.
    pub fn stored(self) -> Table {
        match self {
            InputTable::Customers => Table::CustomerProfiles,
            InputTable::Products => Table::Products,
            InputTable::Orders => Table::Orders,
            InputTable::Events => Table::Events,
            InputTable::Surveys => Table::Surveys,
            InputTable::Consents => Table::Consents,
            InputTable::CampaignOutcomes => Table::CampaignOutcomes,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn columns(self) -> &'static [Column] {
        match self {
            InputTable::Customers => CUSTOMERS,
            InputTable::Products => PRODUCTS,
            InputTable::Orders => ORDERS,
            InputTable::Events => EVENTS,
            InputTable::Surveys => SURVEYS,
            InputTable::Consents => CONSENTS,
            InputTable::CampaignOutcomes => CAMPAIGN_OUTCOMES,
        }
    }

    pub fn column(self, name: &str) -> Option<(usize, &'static Column)> {
        self.columns().iter().enumerate().find(|(_, c)| c.name == name)
    }

    /// Whether rows carry a `customer_id` that is resolved to a unified customer.
    pub fn refers_to_customers(self) -> bool {
        !matches!(self, InputTable::Products)
    }

    /// Whether an exact repeat of a row is a duplicate to remove. Order lines without
    /// an `order_id` have no identity: two identical lines can be two genuine purchases
    /// (CDNOW holds 255 such rows), so they are kept.
    pub fn dedups(self, has_order_id: bool) -> bool {
        match self {
            InputTable::Orders => has_order_id,
            _ => true,
        }
    }
}

impl fmt::Display for InputTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The names of every table a workspace may hold, inputs and results.
pub const WORKSPACE_TABLES: &[&str] = &[
    "customer_profiles",
    "customer_sources",
    "customers",
    "orders",
    "events",
    "surveys",
    "products",
    "consents",
    "campaign_outcomes",
    "quarantine",
    "segments",
    "behaviour",
    "gaps",
    "knowledge_gaps",
    "recommendations",
    "actions",
    "forecasts",
    "uplift",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_unique_and_read_back() {
        let names: std::collections::BTreeSet<&str> = Table::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(names.len(), Table::ALL.len());
        for t in Table::ALL {
            assert_eq!(Table::from_name(t.name()), Some(t));
        }
        assert_eq!(InputTable::Customers.stored(), Table::CustomerProfiles);
        for t in InputTable::ALL.into_iter().filter(|t| *t != InputTable::Customers) {
            assert_eq!(t.stored().name(), t.name());
        }
        assert_eq!(Table::from_name("Customers"), None);
    }

    #[test]
    fn every_table_has_a_required_key_and_unique_columns() {
        for t in InputTable::ALL {
            let cols = t.columns();
            assert!(cols.iter().any(|c| c.required), "{t}");
            let mut names: Vec<_> = cols.iter().map(|c| c.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), cols.len(), "{t}");
            assert_eq!(InputTable::from_name(t.name()), Some(t));
        }
    }

    #[test]
    fn only_profile_columns_are_personal() {
        for t in InputTable::ALL {
            for c in t.columns() {
                if c.pii {
                    assert_eq!(t, InputTable::Customers);
                }
            }
        }
    }
}
