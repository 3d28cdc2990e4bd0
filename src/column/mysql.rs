//! MySQL and MariaDB: `SealedValue` is VARBINARY/BLOB, `SealedText` is TEXT/VARCHAR.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::mysql::{MySqlTypeInfo, MySqlValueRef};
use sqlx::{Decode, Encode, MySql, Type};

use super::{SealedText, decode_error};
use crate::format::SealedValue;

impl Type<MySql> for SealedValue {
    fn type_info() -> MySqlTypeInfo {
        <Vec<u8> as Type<MySql>>::type_info()
    }

    fn compatible(ty: &MySqlTypeInfo) -> bool {
        <Vec<u8> as Type<MySql>>::compatible(ty)
    }
}

impl Encode<'_, MySql> for SealedValue {
    fn encode_by_ref(&self, buf: &mut Vec<u8>) -> Result<IsNull, BoxDynError> {
        <&[u8] as Encode<MySql>>::encode(self.as_bytes(), buf)
    }
}

impl Decode<'_, MySql> for SealedValue {
    fn decode(value: MySqlValueRef<'_>) -> Result<Self, BoxDynError> {
        let bytes = <Vec<u8> as Decode<MySql>>::decode(value)?;
        SealedValue::from_bytes(bytes).map_err(decode_error)
    }
}

impl Type<MySql> for SealedText {
    fn type_info() -> MySqlTypeInfo {
        <String as Type<MySql>>::type_info()
    }

    fn compatible(ty: &MySqlTypeInfo) -> bool {
        <String as Type<MySql>>::compatible(ty)
    }
}

impl Encode<'_, MySql> for SealedText {
    fn encode_by_ref(&self, buf: &mut Vec<u8>) -> Result<IsNull, BoxDynError> {
        <String as Encode<MySql>>::encode(self.0.to_text(), buf)
    }
}

impl Decode<'_, MySql> for SealedText {
    fn decode(value: MySqlValueRef<'_>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<MySql>>::decode(value)?;
        SealedValue::from_text(text)
            .map(SealedText)
            .map_err(decode_error)
    }
}
