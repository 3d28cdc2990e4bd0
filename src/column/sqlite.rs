//! SQLite: `SealedValue` is BLOB, `SealedText` is TEXT.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};
use sqlx::{Decode, Encode, Sqlite, Type};

use super::{SealedText, decode_error};
use crate::format::SealedValue;

impl Type<Sqlite> for SealedValue {
    fn type_info() -> SqliteTypeInfo {
        <Vec<u8> as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <Vec<u8> as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for SealedValue {
    fn encode(self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <Vec<u8> as Encode<Sqlite>>::encode(self.into_bytes(), buf)
    }

    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <Vec<u8> as Encode<Sqlite>>::encode(self.as_bytes().to_vec(), buf)
    }
}

impl Decode<'_, Sqlite> for SealedValue {
    fn decode(value: SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
        let bytes = <&[u8] as Decode<Sqlite>>::decode(value)?;
        SealedValue::from_bytes(bytes).map_err(decode_error)
    }
}

impl Type<Sqlite> for SealedText {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }

    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl Encode<'_, Sqlite> for SealedText {
    fn encode_by_ref(&self, buf: &mut SqliteArgumentsBuffer) -> Result<IsNull, BoxDynError> {
        <String as Encode<Sqlite>>::encode(self.0.to_text(), buf)
    }
}

impl Decode<'_, Sqlite> for SealedText {
    fn decode(value: SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        SealedValue::from_text(text)
            .map(SealedText)
            .map_err(decode_error)
    }
}
