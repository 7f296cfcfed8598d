//! Rust values → an Arrow record batch, column by column, with the field of each column
//! declared where its values are given.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray, UInt8Array,
};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;

use crate::Result;

/// A record batch being built: `nullable` says whether the column may hold nulls.
#[derive(Default)]
pub struct Columns {
    fields: Vec<Field>,
    arrays: Vec<ArrayRef>,
}

impl Columns {
    fn push(&mut self, name: &str, nullable: bool, array: ArrayRef) {
        self.fields.push(Field::new(name, array.data_type().clone(), nullable));
        self.arrays.push(array);
    }

    pub fn text<'a>(&mut self, name: &str, nullable: bool, values: impl IntoIterator<Item = Option<&'a str>>) {
        self.push(name, nullable, Arc::new(values.into_iter().collect::<StringArray>()));
    }

    pub fn floats(&mut self, name: &str, nullable: bool, values: impl IntoIterator<Item = Option<f64>>) {
        self.push(name, nullable, Arc::new(values.into_iter().collect::<Float64Array>()));
    }

    pub fn ints(&mut self, name: &str, nullable: bool, values: impl IntoIterator<Item = Option<i64>>) {
        self.push(name, nullable, Arc::new(values.into_iter().collect::<Int64Array>()));
    }

    pub fn small(&mut self, name: &str, nullable: bool, values: impl IntoIterator<Item = Option<u8>>) {
        self.push(name, nullable, Arc::new(values.into_iter().collect::<UInt8Array>()));
    }

    pub fn bools(&mut self, name: &str, nullable: bool, values: impl IntoIterator<Item = Option<bool>>) {
        self.push(name, nullable, Arc::new(values.into_iter().collect::<BooleanArray>()));
    }

    /// Days since 1970-01-01.
    pub fn dates(&mut self, name: &str, nullable: bool, values: impl IntoIterator<Item = Option<i32>>) {
        self.push(name, nullable, Arc::new(values.into_iter().collect::<Date32Array>()));
    }

    /// Microseconds since 1970-01-01, in UTC.
    pub fn timestamps(&mut self, name: &str, nullable: bool, values: impl IntoIterator<Item = Option<i64>>) {
        let array = values.into_iter().collect::<TimestampMicrosecondArray>().with_timezone("UTC");
        self.push(name, nullable, Arc::new(array));
    }

    pub fn finish(self) -> Result<RecordBatch> {
        Ok(RecordBatch::try_new(Arc::new(Schema::new(self.fields)), self.arrays).map_err(DataFusionError::from)?)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, TimeUnit};

    use super::*;

    #[test]
    fn columns_keep_their_order_types_and_nulls() {
        let mut c = Columns::default();
        c.text("id", false, [Some("a"), Some("b")]);
        c.floats("x", true, [Some(1.5), None]);
        c.timestamps("at", true, [Some(86_400_000_000), None]);
        let b = c.finish().unwrap();
        let s = b.schema();
        let names: Vec<&str> = s.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["id", "x", "at"]);
        assert!(!s.field(0).is_nullable() && s.field(1).is_nullable());
        assert_eq!(
            s.field(2).data_type(),
            &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(b.column(1).null_count(), 1);
        let mut bad = Columns::default();
        bad.text("id", false, [Some("a")]);
        bad.floats("x", false, [Some(1.0), Some(2.0)]);
        assert!(bad.finish().is_err(), "columns of different lengths");
    }
}
