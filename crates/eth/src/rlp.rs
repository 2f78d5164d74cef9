//! Thin, strict RLP helpers over `alloy-rlp`: a field-list builder for encoding and a list reader
//! for decoding that names each field in its errors and refuses trailing data.

use alloy_rlp::{Decodable, Encodable, Header};
use ruint::aliases::U256;

use crate::address::Address;
use crate::authorization::SignedAuthorization;
use crate::error::EthError;
use crate::limits::Limits;
use crate::tx::{AccessList, AccessListItem};

/// Builds the payload of an RLP list field by field, then wraps it in a list header.
#[derive(Default)]
pub(crate) struct ListBuilder {
    payload: Vec<u8>,
}

impl ListBuilder {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        ListBuilder {
            payload: Vec::with_capacity(capacity),
        }
    }

    pub(crate) fn u64(&mut self, value: u64) -> &mut Self {
        value.encode(&mut self.payload);
        self
    }

    pub(crate) fn u256(&mut self, value: &U256) -> &mut Self {
        value.encode(&mut self.payload);
        self
    }

    pub(crate) fn bytes(&mut self, value: &[u8]) -> &mut Self {
        value.encode(&mut self.payload);
        self
    }

    /// A `to` field: 20 bytes, or the empty string for contract creation.
    pub(crate) fn to(&mut self, to: &Option<Address>) -> &mut Self {
        match to {
            Some(address) => address.0.encode(&mut self.payload),
            None => [0u8; 0].as_slice().encode(&mut self.payload),
        }
        self
    }

    pub(crate) fn access_list(&mut self, list: &AccessList) -> &mut Self {
        let mut outer = ListBuilder::default();
        for item in list {
            let mut keys = ListBuilder::with_capacity(item.storage_keys.len() * 33);
            for key in &item.storage_keys {
                keys.bytes(key);
            }
            let mut entry = ListBuilder::default();
            entry.bytes(&item.address.0);
            entry.raw(&keys.finish());
            outer.raw(&entry.finish());
        }
        self.raw(&outer.finish())
    }

    pub(crate) fn authorization_list(&mut self, list: &[SignedAuthorization]) -> &mut Self {
        let mut outer = ListBuilder::with_capacity(list.len() * 112);
        for tuple in list {
            tuple.encode_into(&mut outer);
        }
        self.raw(&outer.finish())
    }

    /// Appends an already encoded item.
    pub(crate) fn raw(&mut self, encoded: &[u8]) -> &mut Self {
        self.payload.extend_from_slice(encoded);
        self
    }

    /// The list: header followed by the payload.
    pub(crate) fn finish(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 9);
        self.finish_into(&mut out);
        out
    }

    pub(crate) fn finish_into(&self, out: &mut Vec<u8>) {
        Header {
            list: true,
            payload_length: self.payload.len(),
        }
        .encode(out);
        out.extend_from_slice(&self.payload);
    }
}

/// Reads the items of one RLP list in order. Every read names its field.
pub(crate) struct ListReader<'a> {
    items: &'a [u8],
    read: usize,
    list_field: &'static str,
}

impl<'a> ListReader<'a> {
    /// Opens the list that must fill `input` exactly.
    pub(crate) fn whole(list_field: &'static str, input: &'a [u8]) -> Result<Self, EthError> {
        let mut buf = input;
        let reader = Self::next_in(list_field, &mut buf)?;
        if !buf.is_empty() {
            return Err(EthError::TrailingBytes {
                field: list_field,
                count: buf.len(),
            });
        }
        Ok(reader)
    }

    /// Opens the list at the start of `buf` and advances `buf` past it.
    fn next_in(list_field: &'static str, buf: &mut &'a [u8]) -> Result<Self, EthError> {
        let items =
            Header::decode_bytes(buf, true).map_err(|err| EthError::rlp(list_field, err))?;
        Ok(ListReader {
            items,
            read: 0,
            list_field,
        })
    }

    fn count_error(&self, expected: usize) -> EthError {
        let mut rest = self.items;
        let mut more = 0;
        while let Ok(header) = Header::decode(&mut rest) {
            rest = &rest[header.payload_length..];
            more += 1;
            if rest.is_empty() {
                break;
            }
        }
        EthError::FieldCount {
            field: self.list_field,
            expected,
            got: self.read + more,
        }
    }

    fn ensure_more(&self, field: &'static str) -> Result<(), EthError> {
        if self.items.is_empty() {
            return Err(EthError::Rlp {
                field,
                reason: "missing".into(),
            });
        }
        Ok(())
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, EthError> {
        self.ensure_more(field)?;
        let value = u64::decode(&mut self.items).map_err(|err| match err {
            alloy_rlp::Error::Overflow | alloy_rlp::Error::UnexpectedLength => {
                EthError::ValueOverflow { field, bits: 64 }
            }
            other => EthError::rlp(field, other),
        })?;
        self.read += 1;
        Ok(value)
    }

    pub(crate) fn u256(&mut self, field: &'static str) -> Result<U256, EthError> {
        self.ensure_more(field)?;
        let value = U256::decode(&mut self.items).map_err(|err| match err {
            alloy_rlp::Error::Overflow => EthError::ValueOverflow { field, bits: 256 },
            other => EthError::rlp(field, other),
        })?;
        self.read += 1;
        Ok(value)
    }

    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], EthError> {
        self.ensure_more(field)?;
        let value = Header::decode_bytes(&mut self.items, false)
            .map_err(|err| EthError::rlp(field, err))?;
        self.read += 1;
        Ok(value)
    }

    /// `data`, bounded by the limits before it is copied.
    pub(crate) fn data(&mut self, limits: &Limits) -> Result<Vec<u8>, EthError> {
        let data = self.bytes("data")?;
        if data.len() > limits.max_data_len {
            return Err(EthError::DataTooLarge {
                len: data.len(),
                max: limits.max_data_len,
            });
        }
        Ok(data.to_vec())
    }

    /// `to`: 20 bytes, or empty for contract creation.
    pub(crate) fn to(&mut self) -> Result<Option<Address>, EthError> {
        let bytes = self.bytes("to")?;
        if bytes.is_empty() {
            return Ok(None);
        }
        Address::from_slice("to", bytes).map(Some)
    }

    pub(crate) fn access_list(&mut self, limits: &Limits) -> Result<AccessList, EthError> {
        self.ensure_more("access_list")?;
        let mut outer = ListReader::next_in("access_list", &mut self.items)?;
        self.read += 1;
        let mut list = Vec::new();
        let mut key_count = 0usize;
        while !outer.items.is_empty() {
            if list.len() == limits.max_access_list_items {
                return Err(EthError::AccessListTooLong {
                    len: list.len() + 1,
                    max: limits.max_access_list_items,
                });
            }
            let mut entry = ListReader::next_in("access_list", &mut outer.items)?;
            let address =
                Address::from_slice("access_list.address", entry.bytes("access_list.address")?)?;
            entry.ensure_more("access_list.storage_keys")?;
            let mut keys = ListReader::next_in("access_list.storage_keys", &mut entry.items)?;
            entry.read += 1;
            entry.finish(2)?;
            let mut storage_keys = Vec::new();
            while !keys.items.is_empty() {
                key_count += 1;
                if key_count > limits.max_storage_keys {
                    return Err(EthError::TooManyStorageKeys {
                        count: key_count,
                        max: limits.max_storage_keys,
                    });
                }
                let key: [u8; 32] =
                    keys.bytes("access_list.storage_keys")?
                        .try_into()
                        .map_err(|_| EthError::Rlp {
                            field: "access_list.storage_keys",
                            reason: "a storage key must be 32 bytes".into(),
                        })?;
                storage_keys.push(key);
            }
            list.push(AccessListItem {
                address,
                storage_keys,
            });
        }
        Ok(list)
    }

    /// An EIP-7702 authorization list, bounded by the limits before each tuple is read. Errors
    /// name the tuple by its index.
    pub(crate) fn authorization_list(
        &mut self,
        limits: &Limits,
    ) -> Result<Vec<SignedAuthorization>, EthError> {
        self.ensure_more("authorization_list")?;
        let mut outer = ListReader::next_in("authorization_list", &mut self.items)?;
        self.read += 1;
        let mut list = Vec::new();
        while !outer.items.is_empty() {
            if list.len() == limits.max_authorizations {
                return Err(EthError::AuthorizationListTooLong {
                    len: list.len() + 1,
                    max: limits.max_authorizations,
                });
            }
            let index = list.len();
            let tuple = ListReader::next_in("authorization_list", &mut outer.items)
                .and_then(|mut tuple| SignedAuthorization::decode_from(&mut tuple))
                .map_err(|err| EthError::Authorization {
                    index,
                    reason: err.to_string(),
                })?;
            list.push(tuple);
        }
        Ok(list)
    }

    /// Checks that exactly `expected` items were in the list.
    pub(crate) fn finish(&self, expected: usize) -> Result<(), EthError> {
        if !self.items.is_empty() || self.read != expected {
            return Err(self.count_error(expected));
        }
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}
